"""Named actions: argv templates with typed parameters, defined in the config. Pure code.

An action is how people get to run ``deploy.sh <env>`` without free text:
every parameter is checked against its type, and a value only ever fills
the argv items that name it, so it can never add or split arguments.

    [actions.deploy]
    description = "Deploy a service"
    argv = ["/opt/tools/deploy.sh", "--env", "{env}", "--replicas={replicas}"]
    timeout = 600
    confirm = true   # the request must say "confirm": true (the page asks first)
    stderr = "merged"  # one pipe for stdout and stderr, in exact order (default "separate")
    stdin = true       # its jobs take input (POST /jobs/<id>/input), whatever allow_stdin says (default false)
    [actions.deploy.params.env]
    type = "choice"
    choices = ["staging", "production"]
    [actions.deploy.params.replicas]
    type = "integer"
    min = 1
    max = 10
    default = 2
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .access import AccessConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidParameter(ValueError):
    """A parameter value was refused; ``name`` says which."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"parameter {name!r}: {message}")
        self.name = name


@dataclass(frozen=True)
class Parameter:
    """One typed parameter of an action."""

    name: str
    type: str  # "string", "integer" or "choice"
    description: str = ""
    pattern: str | None = None
    max_length: int = 256
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    default: Any = None

    def validate(self, value: Any) -> str:
        """The value as it will appear in argv, or InvalidParameter."""
        if self.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
                    value = int(value)
                else:
                    raise InvalidParameter(self.name, "must be an integer")
            if self.minimum is not None and value < self.minimum:
                raise InvalidParameter(self.name, f"must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise InvalidParameter(self.name, f"must be at most {self.maximum}")
            return str(value)
        if not isinstance(value, str):
            raise InvalidParameter(self.name, "must be a string")
        if "\0" in value:
            raise InvalidParameter(self.name, "must not contain NUL")
        if self.type == "choice":
            if value not in self.choices:
                raise InvalidParameter(self.name, f"must be one of: {', '.join(self.choices)}")
            return value
        if len(value) > self.max_length:
            raise InvalidParameter(self.name, f"must be at most {self.max_length} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise InvalidParameter(self.name, f"must match {self.pattern}")
        return value

    def to_json(self) -> dict[str, Any]:
        """The parameter's schema, for GET /actions and the browser form."""
        schema: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description}
        if self.type == "string":
            schema.update(pattern=self.pattern, max_length=self.max_length)
        elif self.type == "integer":
            schema.update(min=self.minimum, max=self.maximum)
        else:
            schema["choices"] = list(self.choices)
        schema["required"] = self.default is None
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Action:
    """A named argv template."""

    name: str
    argv: tuple[str, ...]
    params: tuple[Parameter, ...]
    description: str = ""
    timeout: float | None = None
    confirm: bool = False  # a request must carry "confirm": true
    stderr: str = "separate"  # "merged": one pipe for stdout and stderr (exact order)
    stdin: bool = False  # its jobs take input (a stdin pipe) unless the request says "stdin": false

    def render(self, values: Any) -> list[str]:
        """Validate ``values`` (a JSON object) and fill the template."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise InvalidParameter("params", "must be a JSON object")
        known = {param.name for param in self.params}
        for name in values:
            if name not in known:
                raise InvalidParameter(str(name), "is not a parameter of this action")
        filled: dict[str, str] = {}
        for param in self.params:
            if param.name in values:
                filled[param.name] = param.validate(values[param.name])
            elif param.default is not None:
                filled[param.name] = param.validate(param.default)
            else:
                raise InvalidParameter(param.name, "is required")
        return [item.format_map(filled) for item in self.argv]

    def to_json(self) -> dict[str, Any]:
        """The action as listed at GET /actions."""
        return {
            "name": self.name,
            "description": self.description,
            "argv": list(self.argv),
            "timeout": self.timeout,
            "confirm": self.confirm,
            "stderr": self.stderr,
            "stdin": self.stdin,
            "params": [param.to_json() for param in self.params],
        }


def _placeholders(item: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(item) if field is not None}
    except ValueError as exc:
        raise AccessConfigError(f"bad template {item!r}: {exc}") from None


def _parse_parameter(action: str, name: str, spec: Any) -> Parameter:
    where = f"actions.{action}.params.{name}"
    if not isinstance(spec, Mapping):
        raise AccessConfigError(f"{where}: expected a table")
    kind = spec.get("type")
    if kind not in ("string", "integer", "choice"):
        raise AccessConfigError(f"{where}.type: must be string, integer or choice")
    allowed = {"type", "description", "default"} | {
        "string": {"pattern", "max_length"},
        "integer": {"min", "max"},
        "choice": {"choices"},
    }[kind]
    unknown = set(spec) - allowed
    if unknown:
        raise AccessConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    pattern = spec.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise AccessConfigError(f"{where}.pattern: {exc}") from None
    choices = spec.get("choices", [])
    if kind == "choice" and (not choices or not all(isinstance(c, str) for c in choices)):
        raise AccessConfigError(f"{where}.choices: expected a non-empty list of strings")
    param = Parameter(
        name=name,
        type=kind,
        description=str(spec.get("description", "")),
        pattern=pattern,
        max_length=int(spec.get("max_length", 256)),
        minimum=spec.get("min"),
        maximum=spec.get("max"),
        choices=tuple(choices),
        default=spec.get("default"),
    )
    if param.default is not None:
        try:
            param.validate(param.default)
        except InvalidParameter as exc:
            raise AccessConfigError(f"{where}.default: {exc}") from None
    return param


def parse_actions(document: Any) -> dict[str, Action]:
    """``[actions.NAME]`` tables from the config."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise AccessConfigError("actions: expected a table of action tables")
    actions: dict[str, Action] = {}
    for name, spec in document.items():
        where = f"actions.{name}"
        if not _NAME.match(name):
            raise AccessConfigError(f"{where}: names are letters, digits, '_', '.', '-'")
        if not isinstance(spec, Mapping):
            raise AccessConfigError(f"{where}: expected a table")
        unknown = set(spec) - {"argv", "description", "timeout", "params", "confirm", "stderr", "stdin"}
        if unknown:
            raise AccessConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise AccessConfigError(f"{where}.argv: expected a non-empty list of non-empty strings")
        if _placeholders(argv[0]):
            raise AccessConfigError(f"{where}.argv: the program itself cannot be a parameter")
        params_doc = spec.get("params", {})
        if not isinstance(params_doc, Mapping):
            raise AccessConfigError(f"{where}.params: expected a table")
        params = tuple(_parse_parameter(name, pname, pspec) for pname, pspec in params_doc.items())
        used = set().union(*(_placeholders(item) for item in argv))
        declared = {p.name for p in params}
        if used - declared:
            raise AccessConfigError(f"{where}.argv: undeclared parameter(s) {', '.join(sorted(used - declared))}")
        timeout = spec.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise AccessConfigError(f"{where}.timeout: expected a positive number of seconds")
        confirm = spec.get("confirm", False)
        if not isinstance(confirm, bool):
            raise AccessConfigError(f"{where}.confirm: expected true or false")
        stderr = spec.get("stderr", "separate")
        if stderr not in ("separate", "merged"):
            raise AccessConfigError(f'{where}.stderr: expected "separate" or "merged"')
        stdin = spec.get("stdin", False)
        if not isinstance(stdin, bool):
            raise AccessConfigError(f"{where}.stdin: expected true or false")
        actions[name] = Action(
            name, tuple(argv), params, str(spec.get("description", "")), timeout, confirm, stderr, stdin
        )
    return actions

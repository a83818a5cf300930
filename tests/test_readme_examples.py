"""Every shell example in README.md runs as written, against a real server with the configuration it shows.

How a block is run is said by an HTML comment on the line before its fence (README, "Development"):
- none: against a server on the built-in defaults (no config file, no SSECMD_* settings);
- ``<!-- example: config NAME -->``: against a server whose config file is the TOML block marked
  ``<!-- example-config: NAME -->``, its placeholders filled in (a token and a password hash, a stand-in for
  ``/opt/tools/deploy.sh``), with the token in SSECMD_TOKEN;
- ``<!-- example: serves -->``: the block starts a server itself; it must answer /healthz, and is then stopped;
- ``<!-- example: pending REASON -->``: run, and expected to fail until REASON is done (then remove the marker);
- ``<!-- example: skip: REASON -->``: not run.

Each command runs in one bash session, so variables carry over (``id=$(curl ... | jq -r .id)``). The URL
``http://127.0.0.1:8000`` is replaced by the test server's, and SSECMD_URL points the client there. curl runs
with ``fail-with-body``, so an error answer fails the example. A line whose comment ends in "until Ctrl-C"
runs for two seconds and gets SIGINT, as a person would stop it; every other command must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.config import load_settings
from app.policy.access import hash_password, hash_token, new_token

from .server import REPO, VENV_BIN, GunicornServer, free_port, wait_healthy

README = REPO / "README.md"
README_URL = "http://127.0.0.1:8000"
SHELL_LANGUAGES = ("sh", "bash")
ENDLESS = re.compile(r"#[^#]*\buntil Ctrl-C\s*$")
ENDLESS_SECONDS = 2
DIRECTIVE = re.compile(r"^<!--\s*(example|example-config):\s*(.*?)\s*-->$")
DEPLOY_SCRIPT = "/opt/tools/deploy.sh"
# Jobs the examples start may end any way but these: each means an example does not work as written.
BROKEN_STATES = ("failed_to_start", "killed", "timed_out")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README."""

    language: str
    text: str
    line: int  # of the opening fence, 1-based
    section: str
    directive: str | None  # "example: ..." or "example-config: ..." from the comment before the fence

    @property
    def name(self) -> str:
        """A test id: the section and the line."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{slug}-line{self.line}"

    @property
    def how(self) -> tuple[str, str]:
        """(kind, argument) of an ``example:`` directive: ("default", ""), ("config", NAME), ("skip", REASON)..."""
        if self.directive is None or not self.directive.startswith("example:"):
            return "default", ""
        words = self.directive.removeprefix("example:").strip()
        kind, _, argument = words.partition(" ")
        return kind.rstrip(":"), argument.strip()


@dataclass(frozen=True)
class Command:
    """One command of a shell block (continuation lines joined)."""

    text: str
    line: int
    endless: bool


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with its language, section and the directive before it. Pure."""
    blocks = []
    lines = text.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            language = line[3:].strip()
            start = index
            index += 1
            body = []
            while index < len(lines) and not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            before = lines[start - 1].strip() if start else ""
            directive = DIRECTIVE.match(before)
            blocks.append(Block(language, "\n".join(body) + "\n", start + 1, section,
                                f"{directive[1]}: {directive[2]}" if directive else None))
        index += 1
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block: comments and blank lines dropped, backslash continuations joined. Pure."""
    commands = []
    pending: list[str] = []
    first = 0
    for offset, line in enumerate(block.text.splitlines()):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            first = block.line + 1 + offset
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        text = " ".join(pending)
        shlex.split(text, comments=True)  # balanced quotes, or ValueError naming the example
        commands.append(Command(text, first, bool(ENDLESS.search(stripped))))
        pending = []
    assert not pending, f"README line {first}: a continuation that never ends"
    return commands


def example_script(commands: list[Command], url: str) -> str:
    """The bash script that runs the commands one after another and writes "<index> <status>" to fd 3. Pure."""
    # Job control (-m): each background command gets its own process group, with SIGINT not ignored.
    lines = ["set -m -o pipefail"]
    for number, command in enumerate(commands):
        text = command.text.replace(README_URL, url)
        if command.endless:
            lines += [f"( {text}\n) &", "__pid=$!", f"sleep {ENDLESS_SECONDS}",
                      'kill -INT -- "-$__pid" 2>/dev/null', 'wait "$__pid"']
        else:
            lines.append(text)
        lines.append(f'echo "{number} $?" >&3')
    return "\n".join(lines) + "\n"


# Unit tests of the harness itself.


def test_blocks_commands_and_directives_are_read_as_documented():
    text = (
        "## A section\n\n<!-- example: config demo -->\n```sh\n# a comment\nid=$(curl -s \\\n  http://x | jq -r .id)\n"
        "\ncurl -N http://x/events   # live until Ctrl-C\n```\n\n```toml\na = 1\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.language, b.line, b.section, b.how) for b in blocks] == [
        ("sh", 4, "A section", ("config", "demo")), ("toml", 12, "A section", ("default", "")),
    ]
    assert shell_commands(blocks[0]) == [
        Command("id=$(curl -s  http://x | jq -r .id)", 6, False),
        Command("curl -N http://x/events   # live until Ctrl-C", 9, True),
    ]
    script = example_script(shell_commands(blocks[0]), "http://127.0.0.1:1")
    assert 'echo "0 $?" >&3' in script and "( curl -N http://x/events   # live until Ctrl-C\n) &" in script


def test_every_directive_in_the_readme_is_understood():
    blocks = readme_blocks(README.read_text())
    configs = {b.directive.split(":", 1)[1].strip() for b in blocks if (b.directive or "").startswith("example-config")}
    shell = [b for b in blocks if b.language in SHELL_LANGUAGES]
    assert len(shell) >= 8
    for block in shell:
        kind, argument = block.how
        assert kind in ("default", "config", "serves", "pending", "skip"), block
        if kind == "config":
            assert argument in configs, f"{block.name}: no TOML block marked example-config: {argument}"
        if kind in ("pending", "skip"):
            assert argument, f"{block.name}: say why"
        for command in shell_commands(block):
            assert "3f2a..." not in command.text, f"README line {command.line}: a placeholder no one can run"


# Configurations.


@dataclass
class ExampleConfig:
    """A TOML example made runnable, and what its examples need to use it."""

    path: Path
    token: str


def _runnable_toml(text: str, token: str, deploy_script: str) -> str:
    """The TOML example with its placeholders filled: a token hash, a password hash, the deploy script."""
    filled = (
        text.replace('"sha256:..."', json.dumps(hash_token(token)))
        .replace('"scrypt$16384$..."', json.dumps(hash_password("correct horse battery staple")))
        .replace(DEPLOY_SCRIPT, deploy_script)
    )
    assert "...\"" not in filled, f"a placeholder the harness does not know:\n{filled}"
    return filled


@pytest.fixture(scope="module")
def deploy_script() -> Iterator[str]:
    """A stand-in for /opt/tools/deploy.sh that jobs running as 'nobody' can execute: it prints its arguments."""
    directory = Path(tempfile.mkdtemp(prefix="ssecmd-readme-"))
    directory.chmod(0o755)
    script = directory / "deploy.sh"
    script.write_text('#!/bin/sh\necho "deploy.sh stand-in: $*"\n')
    script.chmod(0o755)
    yield str(script)
    script.unlink()
    directory.rmdir()


@pytest.mark.parametrize("block", [b for b in readme_blocks(README.read_text()) if b.language == "toml"],
                         ids=lambda b: b.name)
def test_every_config_example_loads(block, tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(_runnable_toml(block.text, new_token(), DEPLOY_SCRIPT))
    path.chmod(0o600)
    settings = load_settings({"SSECMD_CONFIG": str(path)})
    if "[actions.deploy]" in block.text:
        assert "deploy" in settings.actions


# Running the shell examples.


@pytest.fixture(scope="module")
def servers(tmp_path_factory, deploy_script) -> Iterator[dict]:
    """A server per configuration the examples name, started when first needed."""
    started: dict[str, tuple[GunicornServer, ExampleConfig | None]] = {}
    blocks = readme_blocks(README.read_text())

    def server_for(name: str) -> tuple[GunicornServer, ExampleConfig | None]:
        if name not in started:
            directory = tmp_path_factory.mktemp(f"readme-{name}")
            config = None
            settings = {}
            if name != "default":
                toml = next(b for b in blocks if b.directive == f"example-config: {name}")
                config = ExampleConfig(directory / "sse-commander.toml", new_token())
                config.path.write_text(_runnable_toml(toml.text, config.token, deploy_script))
                config.path.chmod(0o600)
                settings["SSECMD_CONFIG"] = str(config.path)
            started[name] = (GunicornServer(directory, settings, test_defaults=False).start(), config)
        return started[name]

    yield server_for
    for server, _ in started.values():
        server.stop()


def _curl_home(directory: Path) -> Path:
    (directory / ".curlrc").write_text("fail-with-body\nshow-error\nmax-time = 60\n")
    return directory


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_block(block: Block, server: GunicornServer, token: str | None, workdir: Path) -> list[str]:
    """Run a block's commands against ``server``; what went wrong, one line per failed command."""
    commands = shell_commands(block)
    env = {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workdir), "LANG": "C.UTF-8", "CURL_HOME": str(_curl_home(workdir)),
        "SSECMD_URL": server.base_url,
    }
    if token:
        env["SSECMD_TOKEN"] = token
    status_read, status_write = os.pipe()
    result = subprocess.run(
        ["bash", "-c", f"exec 3>&{status_write}\n" + example_script(commands, server.base_url)],
        cwd=workdir, env=env, capture_output=True, timeout=240, pass_fds=(status_write,),
        preexec_fn=_default_sigint, start_new_session=True,
    )
    os.close(status_write)
    with os.fdopen(status_read) as statuses:
        exits = {int(number): int(status) for number, status in (line.split() for line in statuses)}
    failures = []
    for number, command in enumerate(commands):
        expected = 130 if command.endless else 0
        if exits.get(number) != expected:
            failures.append(f"README line {command.line}: exit {exits.get(number)}, expected {expected}: "
                            f"{command.text}")
    if failures:
        failures.append("stdout: " + result.stdout.decode(errors="replace")[-3000:])
        failures.append("stderr: " + result.stderr.decode(errors="replace")[-3000:])
    return failures


def _broken_jobs(server: GunicornServer, token: str | None) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    jobs = httpx.get(server.url("/jobs"), headers=headers, timeout=10).json()["jobs"]
    return [job for job in jobs if job["state"] in BROKEN_STATES]


def _run_serving(block: Block, workdir: Path) -> list[str]:
    """Start the block's server on a free port, wait for /healthz, stop it."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8", "SSECMD_BIND": f"127.0.0.1:{port}", "SSECMD_RUN_DIR": str(workdir / "run"),
           "SSECMD_DATA_DIR": str(workdir / "data")}  # the history too: never in the user's home
    log_path = workdir / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", block.text], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}/healthz", 120, block.name, log_path.read_text)
        except RuntimeError as exc:
            return [str(exc)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    return []


SHELL_BLOCKS = [b for b in readme_blocks(README.read_text()) if b.language in SHELL_LANGUAGES]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.name)
def test_shell_example_runs(block, servers, tmp_path):
    kind, argument = block.how
    if kind == "skip":
        pytest.skip(argument)
    if kind == "serves":
        failures = _run_serving(block, tmp_path)
    else:
        server, config = servers(argument if kind == "config" else "default")
        token = config.token if config else None
        failures = _run_block(block, server, token, tmp_path)
        broken = _broken_jobs(server, token)
        if broken:
            failures.append(f"jobs that did not work: {json.dumps(broken)[:2000]}")
    if kind == "pending":
        if not failures:
            pytest.fail(f"README line {block.line} runs now: remove its 'pending' marker ({argument})")
        pytest.xfail(f"pending: {argument}")
    assert not failures, "\n".join(failures)

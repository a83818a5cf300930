"""The rooms of the house: what each layer may import and touch, and the README's map of them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .server import REPO

APP = REPO / "app"


def _modules_loaded_by(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "SSECMD_RUN_DIR": "/tmp"})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_service_imports_nothing_from_flask():
    loaded = _modules_loaded_by("import app.service")
    assert not loaded & {"flask", "werkzeug", "jinja2"}, loaded


def test_what_the_master_imports_before_forking_is_free_of_gevent_and_flask():
    hooks = ("import app.server.gunicorn_conf, app.process.cgroups, app.process.pgroups, app.policy.exposure, "
             "app.policy.filesafety")
    loaded = _modules_loaded_by(hooks)
    assert not loaded & {"gevent", "flask", "werkzeug"}, loaded


def _source(path: Path) -> str:
    return path.read_text()


def test_views_go_through_the_service():
    for view in (APP / "http" / "views").glob("*.py"):
        text = _source(view)
        for forbidden in ("service.store", "service.runner", "service.hub", "service.streams", "service.tracker",
                          "service.policy", "gunicorn.socket", "from ...store", "from ...process"):
            assert forbidden not in text, f"{view.name} uses {forbidden}"


def test_only_the_store_knows_which_store_it_has():
    memory_modules = re.compile(r"(from|import) [\w.]*store\.(memory|eventlog|channels|budget)\b")
    for path in APP.rglob("*.py"):
        if path.parent.name == "store":
            continue
        text = _source(path)
        assert "isinstance(" not in text or "MemoryStore" not in text, path
        imports = memory_modules.findall(text)
        # The service picks the store it starts with (the memory store, for now); nothing else may look.
        assert not imports or (path.name == "service.py" and imports == [("from", "memory")]), (path, imports)


def test_only_the_wire_knows_gunicorns_socket():
    for path in APP.rglob("*.py"):
        if path.name != "wire.py":
            assert "gunicorn.socket" not in _source(path), path


def test_no_attribute_error_fallbacks():
    for path in APP.rglob("*.py"):
        assert "except AttributeError" not in _source(path) and "AttributeError)" not in _source(path), path


# The README's module map.


def _readme_map() -> tuple[set[str], set[str]]:
    """(files, whole directories) that the README's map under "Development" lists, as paths from the repo."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Development", 1)[1].split("```\n", 2)[1]
    files: set[str] = set()
    whole: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match or (not match[2].startswith(("app", "_")) and not re.match(r"[a-z_]+(\.py|\.c|\.h|/)$", match[2])):
            continue
        indent, name = len(match[1]), match[2]
        stack = [(depth, parent) for depth, parent in stack if depth < indent]
        path = "".join(parent for _, parent in stack) + name
        if name.endswith("/"):
            stack.append((indent, name))
            whole.add(path)
        else:
            files.add(path)
    return files, whole


def test_the_readme_module_map_matches_the_tree():
    files, directories = _readme_map()
    actual = {
        str(path.relative_to(REPO)) for path in APP.rglob("*")
        if path.suffix in (".py", ".c", ".h") and "__pycache__" not in path.parts
    }
    for path in sorted(files):
        assert path in actual, f"README lists {path}, which does not exist"
    listed_whole = {d for d in directories if not any(f.startswith(d) for f in files)}
    for path in sorted(actual):
        if path.endswith("/__init__.py") and path != "app/__init__.py":
            assert path.removesuffix("__init__.py") in directories, f"README does not list {path}'s package"
            continue
        assert path in files or any(path.startswith(d) for d in listed_whole), f"README's map lacks {path}"

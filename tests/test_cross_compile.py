"""The C extensions build for other architectures: Debian's cross compilers, installed by `make test`.

The spawner's core (app/process/spawner.c, no Python) is compiled to an object, with
warnings as errors, for every architecture whose cross compiler is here:
arm64 and riscv64 (no dup2, the generic system call table) and 32-bit arm
(16-bit-id set*id calls beside the 32-bit ones). The Python bindings
(app/process/_spawn.c, app/streaming/_jsonescape.c) are compiled against this interpreter's
headers, which describe a 64-bit little-endian machine: for arm64 and riscv64.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from .server import REPO

TARGETS = {"aarch64-linux-gnu": 64, "riscv64-linux-gnu": 64, "arm-linux-gnueabihf": 32}
WARNINGS = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Werror"]


def _compiler(target: str) -> str:
    compiler = shutil.which(f"{target}-gcc")
    if compiler is None:
        pytest.skip(f"no {target}-gcc (make test installs Debian's cross compilers)")
    return compiler


def _compile(compiler: str, source: str, output: Path, *flags: str) -> None:
    command = [compiler, "-std=gnu11", "-O2", *WARNINGS, *flags, "-c", str(REPO / source), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"


def _python_include_flags(tmp_path: Path, target: str) -> list[str]:
    """-I flags for Python.h; Debian's multiarch pyconfig.h is pointed at this machine's for the target."""
    include = Path(sysconfig.get_paths()["include"])
    flags = [f"-I{include}"]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    host_config = Path("/usr/include") / str(multiarch) / include.name / "pyconfig.h"
    if multiarch and host_config.exists():
        shim = tmp_path / target / include.name
        shim.mkdir(parents=True)
        (shim / "pyconfig.h").write_text(f'#include "{host_config}"\n')
        flags.insert(0, f"-I{tmp_path}")
    return flags


@pytest.mark.parametrize("target", TARGETS)
def test_the_spawner_core_compiles(tmp_path, target):
    _compile(_compiler(target), "app/process/spawner.c", tmp_path / "spawner.o")


@pytest.mark.parametrize("target", [target for target, bits in TARGETS.items() if bits == 64])
@pytest.mark.parametrize("source", ["app/process/_spawn.c", "app/streaming/_jsonescape.c"])
def test_the_python_extensions_compile(tmp_path, target, source):
    compiler = _compiler(target)
    _compile(compiler, source, tmp_path / "extension.o", *_python_include_flags(tmp_path, target))

"""What machine the numbers come from, and the knobs that bound them."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from . import tools


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _memory() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def _hypervisor() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    for line in lscpu.splitlines():
        if line.startswith("Hypervisor vendor:"):
            return line.split(":", 1)[1].strip() + " guest"
    return ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, str]:
    """CPU, cores, memory, kernel, versions and the OS limits that matter for these benchmarks."""
    compiler = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()
    virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True) if os.path.exists(
        "/usr/bin/systemd-detect-virt") else None
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "virtualisation": ", ".join(filter(None, [_hypervisor(), virt.stdout.strip() if virt else ""])) or "?",
        "Python": sys.version.split()[0],
        "gunicorn": _version("gunicorn"),
        "gevent": _version("gevent"),
        "greenlet": _version("greenlet"),
        "Flask": _version("flask"),
        "C compiler": compiler[0] if compiler else "?",
        "RLIMIT_NOFILE (the suite and its clients; the server: see Notes)":
        str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        + (f"; {tools.NOFILE_NOTE}" if tools.NOFILE_NOTE else ""),
        "net.core.somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range").replace("\t", "-"),
        "pipe size": _read("/proc/sys/fs/pipe-max-size") + " max, 65536 default",
    }

"""A FUSE file system that answers until told to hang: commands stuck in the kernel, on demand.

``HangingFS`` serves a root directory holding one directory, ``x``. On the
tests' word (a file in its control directory) it stops:

- ``pending``: it no longer reads requests. A process that touches the file
  system waits in the kernel, and a SIGKILL ends the wait (the request was
  never sent): a hung NFS mount's usual behaviour.
- ``stuck``: it reads requests and never answers. The process then waits
  uninterruptibly: even SIGKILL cannot end it until the connection ends.
- ``release``: it closes its connection; every waiter gets an error.

It runs in a mount namespace of its own (``tests/helpers/in_private_mount.py``),
so nothing else on the machine (another engineer's ``df``) can see the mount
and hang on it. Raw protocol (``linux/fuse.h``), standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import time
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_INIT, FUSE_INTERRUPT, FUSE_BATCH_FORGET = 1, 2, 3, 26, 36, 42
NO_REPLY = {FUSE_FORGET, FUSE_INTERRUPT, FUSE_BATCH_FORGET}
IN_HEADER = struct.Struct("<IIQQIIIHH")
OUT_HEADER = struct.Struct("<IiQ")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ROOT, SUBDIR = 1, 2
MODES = ("serve", "pending", "stuck", "release")


def available() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "mounting a FUSE file system needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def enter_private_mounts() -> None:
    """This (single-threaded) process gets a mount namespace of its own, invisible to the rest of the host."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")


def mount(mountpoint: str) -> int:
    """Mount a FUSE file system at ``mountpoint``; its /dev/fuse descriptor (close-on-exec)."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40755,user_id=0,group_id=0,allow_other,default_permissions".encode()
    if _libc().mount(b"fusehang", mountpoint.encode(), b"fuse", MS_NOSUID | MS_NODEV, options) != 0:
        error = ctypes.get_errno()
        os.close(fd)
        raise OSError(error, f"mount fuse at {mountpoint}")
    return fd


def _attr(nodeid: int) -> bytes:
    now = int(time.time())
    # ino, size, blocks, atime, mtime, ctime, 3 x nsec, mode, nlink, uid, gid, rdev, blksize, flags
    return ATTR.pack(nodeid, 4096, 8, now, now, now, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)


class HangingFS:
    """Serves the file system on ``fd`` until told to hang; the word comes from ``control/mode``."""

    def __init__(self, fd: int, control: Path) -> None:
        self.fd = fd
        self.control = control
        self.mode = "serve"

    def _read_mode(self) -> None:
        with contextlib.suppress(OSError):
            wanted = (self.control / "mode").read_text().strip()
            if wanted in MODES and wanted != self.mode:
                self.mode = wanted
                (self.control / "ack").write_text(wanted)

    def run(self) -> None:
        """Serve until released (or until the mount goes away)."""
        (self.control / "ack").write_text(self.mode)
        while True:
            self._read_mode()
            if self.mode == "release":
                os.close(self.fd)
                return
            if self.mode == "pending":
                time.sleep(0.05)  # requests stay queued, unread
                continue
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                request = os.read(self.fd, 1 << 20)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue  # a request interrupted before it was read
                return  # ENODEV: unmounted
            length, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(request)
            if opcode in NO_REPLY:
                continue
            if self.mode == "stuck" and opcode != FUSE_INIT:
                continue  # read, never answered
            self._answer(opcode, unique, nodeid, request[IN_HEADER.size:length])

    def _reply(self, unique: int, error: int = 0, body: bytes = b"") -> None:
        with contextlib.suppress(OSError):  # the waiter may be gone
            os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)

    def _answer(self, opcode: int, unique: int, nodeid: int, body: bytes) -> None:
        if opcode == FUSE_INIT:
            _, minor, max_readahead, _ = struct.unpack_from("<IIII", body)
            init = struct.pack("<IIIIHHIIHHII", 7, min(minor, 31), max_readahead, 0, 16, 12, 65536, 1, 0, 0, 0, 0)
            self._reply(unique, body=init + bytes(24))
        elif opcode == FUSE_LOOKUP:
            name = body.split(b"\0", 1)[0]
            if nodeid == ROOT and name == b"x":
                self._reply(unique, body=struct.pack("<QQQQII", SUBDIR, 1, 0, 0, 0, 0) + _attr(SUBDIR))
            else:
                self._reply(unique, errno.ENOENT)
        elif opcode == FUSE_GETATTR and nodeid in (ROOT, SUBDIR):
            self._reply(unique, body=struct.pack("<QII", 0, 0, 0) + _attr(nodeid))
        else:
            self._reply(unique, errno.ENOSYS)


class Control:
    """The tests' side: tell a HangingFS what to do, and wait until it does."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.mountpoint = directory / "mnt"

    @classmethod
    def make(cls, parent: Path) -> Control:
        """A control directory (with its mount point) under ``parent``."""
        directory = parent / "fusehang"
        (directory / "mnt").mkdir(parents=True)
        return cls(directory)

    def set(self, mode: str, timeout: float = 10) -> None:
        """Switch the file system to ``mode`` and wait for its acknowledgement."""
        (self.dir / "mode").write_text(mode)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if (self.dir / "ack").read_text() == mode:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"the FUSE server did not switch to {mode}")

    def wait_serving(self, timeout: float = 10) -> None:
        """Wait until the FUSE server runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.dir / "ack").exists():
                return
            time.sleep(0.02)
        raise TimeoutError("the FUSE server did not start")

"""ping_probe.py RANGE: run ping as nobody with no_new_privileges, in a network namespace of its own.

The namespace gets its loopback up and net.ipv4.ping_group_range = RANGE (a
per-namespace setting), so the probe changes nothing on the host. Prints ping's
exit code and output as JSON. Needs root.
"""

import ctypes
import fcntl
import json
import os
import pwd
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
    sys.exit(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    request = struct.pack("16sH14s", b"lo", 0, b"")
    flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))
Path("/proc/sys/net/ipv4/ping_group_range").write_text(sys.argv[1])

from app.process.spawn import environment_block, spawn  # noqa: E402

nobody = pwd.getpwnam("nobody")
ping = "/usr/bin/ping" if os.path.exists("/usr/bin/ping") else "/bin/ping"
proc = spawn(ping, ["ping", "-c", "1", "-W", "2", "127.0.0.1"], environment_block({"PATH": "/usr/bin:/bin"}),
             cwd="/", uid=nobody.pw_uid, gid=nobody.pw_gid, no_new_privs=True)
output = b""
for pipe in (proc.stdout, proc.stderr):
    while chunk := os.read(pipe.fileno(), 65536):
        output += chunk
    pipe.close()
print(json.dumps({"code": proc.wait(20), "output": output.decode(errors="replace")}))

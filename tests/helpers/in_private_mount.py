"""in_private_mount.py CONTROL_DIR -- COMMAND...: COMMAND in a mount namespace of its own, with a HangingFS.

The FUSE file system (tests/fusehang.py) is mounted at CONTROL_DIR/mnt, where
only COMMAND and its descendants see it. Its server is a child of this
process, which then becomes COMMAND: the server dies with COMMAND
(PR_SET_PDEATHSIG), and with it the connection, so nothing stays stuck.
"""

import ctypes
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fusehang import HangingFS, enter_private_mounts, mount

PR_SET_PDEATHSIG = 1

control = Path(sys.argv[1])
if sys.argv[2] != "--" or len(sys.argv) < 4:
    sys.exit(__doc__)
command = sys.argv[3:]
enter_private_mounts()
fd = mount(str(control / "mnt"))
parent = os.getpid()
server = os.fork()
if server == 0:
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == parent:
            HangingFS(fd, control).run()
    finally:
        os._exit(0)
os.close(fd)
os.execvp(command[0], command)

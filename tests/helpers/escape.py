"""escape.py [SECONDS] [--hold]: fork a child that leaves the process group with setsid(), print both pids.

The escapee sleeps ten minutes; this process sleeps SECONDS (default 0: it
exits at once). With --hold the escapee keeps our stdout open, as a daemon
started without redirection would.
"""

import os
import sys
import time

hold = "--hold" in sys.argv
args = [a for a in sys.argv[1:] if a != "--hold"]
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    os.setsid()
    if not hold:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
    os.write(ready_w, b"x")  # out of the group before the parent can exit
    time.sleep(600)
    os._exit(0)
os.read(ready_r, 1)
print(f"pids {os.getpid()} {child}", flush=True)
time.sleep(float(args[0]) if args else 0)

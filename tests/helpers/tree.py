"""Start a background grandchild (`sleep 600`), print both pids, then idle silently.

tree.py [SECONDS] [--hold]: the parent sleeps SECONDS (default 600). With --hold the
grandchild keeps our stdout pipe open, as a daemon started without redirection would.
"""

import os
import subprocess
import sys
import time

hold = "--hold" in sys.argv
args = [a for a in sys.argv[1:] if a != "--hold"]
out = None if hold else subprocess.DEVNULL
child = subprocess.Popen(["sleep", "600"], stdout=out, stderr=out)
print(f"pids {os.getpid()} {child.pid}", flush=True)
time.sleep(float(args[0]) if args else 600)

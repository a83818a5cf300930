"""Start a background grandchild that outlives us unless the group is killed; print both pids, then idle.

tree.py [SECONDS]: the parent sleeps SECONDS (default 600) silently after printing.
"""

import os
import subprocess
import sys
import time

child = subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"pids {os.getpid()} {child.pid}", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 600)

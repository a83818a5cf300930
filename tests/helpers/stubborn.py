"""Ignore SIGTERM, say so, and idle: only SIGKILL ends this."""

import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(60)

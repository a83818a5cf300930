"""Write exact bytes to stdout/stderr: emit.py [out|err]:HEX[:SLEEP] ... (SLEEP in seconds, after the write)."""

import os
import sys
import time

for arg in sys.argv[1:]:
    stream, hexdata, *rest = arg.split(":")
    fd = 1 if stream == "out" else 2
    data = bytes.fromhex(hexdata)
    while data:
        data = data[os.write(fd, data):]
    if rest:
        time.sleep(float(rest[0]))

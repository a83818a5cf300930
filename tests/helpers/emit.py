"""Write exact bytes: emit.py [out|err]:HEX[*REPEAT][:SLEEP] ... (SLEEP seconds after the write)."""

import os
import sys
import time

for arg in sys.argv[1:]:
    stream, spec, *rest = arg.split(":")
    fd = 1 if stream == "out" else 2
    hexdata, _, repeat = spec.partition("*")
    data = bytes.fromhex(hexdata) * int(repeat or 1)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if rest:
        time.sleep(float(rest[0]))

"""Where jobs, their event logs and channels live: one interface (``base``), and the memory store behind it."""

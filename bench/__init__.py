"""SSE Commander's benchmark suite: ``make bench`` (full run) and ``make bench-smoke`` (seconds)."""

"""Fleets (issue 20): one command on many hosts. Pure code (runs, targets, cursors) beside the I/O (coordinator,
stream)."""

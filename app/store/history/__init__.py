"""History on disk for the embedded store: jobs' records in SQLite, their output in append-only files.

datadir.py (where, and whether it can be used), records.py (the events file
format), database.py (the SQLite schema, shared by workers, the master and the
CLI), writer.py (the writer thread and its bounded queue), store.py
(``HistoryStore``: memory for what is live, disk for everything).
"""

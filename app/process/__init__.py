"""Commands as processes: spawning (C extension), pipes, the runner, process groups, cgroups, who they run as.

Data flow: process pipes -> ``runner`` (its ``OutputPump``) -> the job's log in the store.
The master's hooks import ``cgroups``, ``pgroups`` and ``runas``: no gevent at module level there.
"""

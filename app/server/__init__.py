"""The gunicorn side: the worker class, its settings and hooks, the shutdown signal, capacity, body deadlines.

The master imports ``gunicorn_conf`` and ``capacity`` before it forks: nothing here
may import gevent or Flask at module level.
"""

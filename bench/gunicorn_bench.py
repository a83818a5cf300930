"""gunicorn settings for the benchmarks: the project's own (gunicorn.conf.py), with the access log off.

app/server/gunicorn_conf.py sets ``accesslog = "-"`` and no SSECMD_ setting turns it off;
one formatted line per request would sit in the hot path of the spawn benchmark.
"""

from app.server.gunicorn_conf import *  # noqa: F403

accesslog = None

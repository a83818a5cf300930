"""Owner liveness: heartbeats of workers, and jobs whose worker or host went away marked ``lost``, once.

Every worker sets ``ssec:hb:<host>:<pid>`` with a TTL (``HEARTBEAT_TTL``)
every ``BEAT_INTERVAL``, and lists its host in ``ssec:hosts``. Every worker
also sweeps every ``SWEEP_INTERVAL``: a running job (``ssec:running:<host>``)
whose worker's heartbeat is gone is marked lost. So a host that dies whole
(kill -9 of its master and workers) has its jobs lost within
TTL + sweep interval (8 s). On its own host a dead worker is noticed at once:
gunicorn's master runs ``python -m app.store.redis.liveness <pid>`` from its
``child_exit`` hook (the master itself never imports redis: it must not
before workers are forked and patched).

Marking is the ``JOB_LOST`` script: one atomic step from running to lost,
appending the job's one ``exit`` event (reason ``lost``), so any number of
racing sweepers write it exactly once, and the owner, if it was not dead after
all, can append nothing more (``_fin``) nor overwrite the record (``_lost``).

Plain redis-py calls: under gevent in a worker, blocking in the helper process.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ...streaming.sse import encode_json_frame
from ...version import VERSION
from .scripts import JOB_LOST

PREFIX = "ssec:"
# Saves of runs' records and ends of runs' jobs, which every worker reads (store.py): a job marked lost here is
# announced there too, so that its run's coordinator looks at once.
RUN_CHANGES = f"{PREFIX}runs:changed"
RUN_CHANGES_KEPT = 1000  # entries kept (approximately): readers need only the newest
HEARTBEAT_TTL = 6.0  # seconds
BEAT_INTERVAL = 1.0
SWEEP_INTERVAL = 2.0
HOST_FORGOTTEN = 24 * 3600  # seconds: a host that has not beaten this long leaves GET /hosts


def heartbeat_key(host: str, worker: int | str) -> str:
    """The key that says a worker is alive."""
    return f"{PREFIX}hb:{host}:{worker}"


def beat(client, host: str, worker: int) -> None:
    """This worker is alive, for HEARTBEAT_TTL more."""
    pipe = client.pipeline(transaction=False)
    pipe.set(heartbeat_key(host, worker), "1", px=int(HEARTBEAT_TTL * 1000))
    pipe.sadd(f"{PREFIX}hosts", host)
    pipe.execute()


def register_host(client, host: str, tags: tuple[str, ...]) -> None:
    """This host's entry in the registry (issue 20, GET /hosts): tags, version, load and when it last beat.
    Every worker of the host writes it; a host gone for a day is forgotten."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = [0.0, 0.0, 0.0]
    info = {"name": host, "tags": list(tags), "version": VERSION, "load": load, "last_heartbeat": time.time()}
    client.set(f"{PREFIX}hostinfo:{host}", json.dumps(info), ex=HOST_FORGOTTEN)


def list_hosts(client) -> list[dict]:
    """Every registered host, by name, with ``running_jobs`` counted now."""
    names = sorted(h.decode() for h in client.smembers(f"{PREFIX}hosts"))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(f"{PREFIX}hostinfo:{name}")
        pipe.scard(f"{PREFIX}running:{name}")
    replies = pipe.execute()
    hosts = []
    for info, running in zip(replies[::2], replies[1::2], strict=True):
        if info is not None:
            hosts.append({**json.loads(info), "running_jobs": running})
    return hosts


def mark_lost(client, job_id: str, host: str, worker: str, started_at: float | None, finished_ttl: float) -> bool:
    """Running -> lost for one job of ``host``'s ``worker`` (see JOB_LOST); whether this call did it."""
    ended = time.time()
    payload = {
        "type": "exit", "reason": "lost", "code": None, "signal": None, "signal_name": None,
        "duration": round(ended - (started_at or ended), 6), "cpu_seconds": None, "peak_memory_bytes": None,
        "error": f"the worker running it (pid {worker} on host {host}) went away",
    }
    tail, _ = encode_json_frame(payload, "exit")
    owner = client.hget(f"{PREFIX}job:{job_id}", "owner")
    owner_name = json.loads(owner) if owner else ""
    lost = client.eval(
        JOB_LOST, 5, f"{PREFIX}job:{job_id}", f"{PREFIX}log:job:{job_id}", f"{PREFIX}running:{host}",
        f"{PREFIX}user:{owner_name}", f"{PREFIX}finished",
        host, worker, tail, json.dumps(ended), int(finished_ttl) or 1, job_id,
    )
    if lost == 1:
        # A run's coordinator (on any host) wakes on this, as on a job's end; it also looks every 0.25 s.
        client.xadd(RUN_CHANGES, {"job": job_id}, maxlen=RUN_CHANGES_KEPT, approximate=True)
    return lost == 1


def sweep(client, finished_ttl: float, only_worker: tuple[str, str] | None = None) -> list[str]:
    """Mark lost every running job whose worker has no heartbeat (or, with ``only_worker`` (host, pid), every
    running job of that worker, dead or not); the ids marked."""
    hosts = [only_worker[0]] if only_worker else [h.decode() for h in client.smembers(f"{PREFIX}hosts")]
    marked = []
    for host in hosts:
        ids = [job_id.decode() for job_id in client.smembers(f"{PREFIX}running:{host}")]
        if not ids:
            continue
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"{PREFIX}job:{job_id}", "_worker", "started_at")
        records = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for worker, _ in records:
            pipe.exists(heartbeat_key(host, (worker or b"").decode()))
        alive = pipe.execute()
        for job_id, (worker, started), beating in zip(ids, records, alive, strict=True):
            worker_id = (worker or b"").decode()
            dead = (host, worker_id) == only_worker if only_worker else not beating
            if dead and mark_lost(client, job_id, host, worker_id, json.loads(started) if started else None,
                                  finished_ttl):
                marked.append(job_id)
    return marked


def main(argv: list[str]) -> int:
    """``python -m app.store.redis.liveness <worker pid>``: the master's child_exit, for a worker of this host."""
    import redis

    from ...config import load_settings

    settings = load_settings()
    if not settings.store_url or len(argv) != 1:
        return 0
    client = redis.Redis.from_url(settings.store_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.delete(heartbeat_key(settings.host_name, argv[0]))
        marked = sweep(client, settings.finished_job_ttl, only_worker=(settings.host_name, argv[0]))
    except redis.RedisError as exc:  # the other workers' sweep marks them once Redis is back
        print(f"sse-commander: worker {argv[0]} died; Redis cannot be reached to mark its jobs lost: {exc}",
              file=sys.stderr)
        return 1
    if marked:
        print(f"sse-commander: worker {argv[0]} died; its jobs are lost: {' '.join(marked)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""GET /events?job=<id>&channel=<name>...: many jobs and channels over one SSE connection."""

from __future__ import annotations

from contextlib import ExitStack
from urllib.parse import parse_qs

from flask import Blueprint, Response, request

from .. import lifecycle
from ..authn import current_principal
from ..errors import ApiError
from ..messages import InvalidMessage, check_channel_name
from ..multiplex import InvalidCursor, parse_composite, source_key
from ..service import current_service
from ..streams import JobSource, multiplex_stream
from ..web import header_text, sse_response

bp = Blueprint("events", __name__)


def _names(kind: str) -> list[str]:
    try:
        values = parse_qs(request.query_string.decode("utf-8", errors="strict"), keep_blank_values=True).get(kind, [])
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the query string is not valid UTF-8") from None
    return list(dict.fromkeys(values))


@bp.get("/events")
def multiplexed() -> Response:
    """Replay and follow every named job and channel; resume all of them with one composite Last-Event-ID."""
    service = current_service()
    principal = current_principal()
    jobs, channels = _names("job"), _names("channel")
    if not jobs and not channels:
        raise ApiError(400, "bad_request", "name at least one ?job=<id> or ?channel=<name>")
    if len(jobs) + len(channels) > service.settings.max_stream_sources:
        raise ApiError(400, "bad_request", f"at most {service.settings.max_stream_sources} jobs and channels")
    sources = {}
    for job_id in jobs:
        job = service.get_job(job_id, principal)
        log = service.store.log(job.id)
        sources[source_key("job", job.id)] = (JobSource(service.store, job.id), lambda log=log: log.changed)
    for name in channels:
        try:
            check_channel_name(name)
        except InvalidMessage as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if not service.policy.may_subscribe(principal, name):
            raise ApiError(403, "forbidden", f"{principal.user or 'anonymous'} may not subscribe to {name!r}")
        log = service.hub.log(name)
        sources[source_key("channel", name)] = (log, lambda log=log: log.changed)
    text = header_text("Last-Event-ID")
    if text is None:
        text = (_names("last_event_id") or [None])[0]
    try:
        cursors = parse_composite(text, len(sources))
    except InvalidCursor as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    unknown = set(cursors) - set(sources)
    if unknown:
        raise ApiError(400, "bad_request", f"Last-Event-ID names sources not in this request: {sorted(unknown)}")
    jobs_visible = service.job_visibility(principal)

    def visible(key: str, event) -> bool:
        return key != "channel:jobs" or jobs_visible(event)

    def stream():
        with ExitStack() as subscriptions:
            for name in channels:
                subscriptions.enter_context(service.hub.subscribed(name))
            yield from multiplex_stream(sources, cursors, service.settings, lifecycle.shutdown_event, visible)

    if cursors and _all_delivered(service, jobs, channels, cursors):
        return Response(status=204)  # every job already delivered to its end: stop reconnecting
    return sse_response(stream())


def _all_delivered(service, jobs: list[str], channels: list[str], cursors: dict[str, int]) -> bool:
    if channels:
        return False  # channels never end
    for job_id in jobs:
        read = service.store.read_after(job_id, cursors.get(source_key("job", job_id), 0))
        if not (read.finished and not read.events):
            return False
    return True

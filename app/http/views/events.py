"""GET /events?job=<id>&channel=<name>...: many jobs and channels over one SSE connection."""

from __future__ import annotations

from urllib.parse import parse_qs

from flask import Blueprint, Response, request

from ...policy.messages import InvalidMessage, check_channel_name
from ...server import lifecycle
from ...service import current_service
from ...streaming.multiplex import InvalidCursor, parse_composite, source_key
from ...streaming.response import JobSource, multiplex_stream
from ..authn import current_principal
from ..errors import ApiError
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
    keys = [*sources, *(source_key("channel", name) for name in channels)]
    text = header_text("Last-Event-ID")
    if text is None:
        text = (_names("last_event_id") or [None])[0]
    try:
        cursors = parse_composite(text, len(keys))
    except InvalidCursor as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    unknown = set(cursors) - set(keys)
    if unknown:
        raise ApiError(400, "bad_request", f"Last-Event-ID names sources not in this request: {sorted(unknown)}")
    if cursors and _all_delivered(service, jobs, channels, cursors):
        return Response(status=204)  # every job already delivered to its end: stop reconnecting
    _check_cursors(service, sources, channels, cursors)
    jobs_visible = service.job_visibility(principal)

    def visible(key: str, event) -> bool:
        return key != "channel:jobs" or jobs_visible is None or jobs_visible(event)

    client_socket = request.environ.get("gunicorn.socket")  # to notice a hang-up while every source is silent
    # Only now, with every check passed, are new channels created, and counted as subscribed until
    # the response's close (however the stream ends, even unstarted).
    subscriptions = service.subscribe(principal, channels)
    for subscription in subscriptions:
        log = subscription.log
        sources[source_key("channel", subscription.name)] = (log, lambda log=log: log.changed)
    stream = multiplex_stream(sources, cursors, service.settings, lifecycle.shutdown_event, visible, client_socket)
    return sse_response(stream, on_close=[lambda: service.unsubscribe(subscriptions)])


def _check_cursors(service, job_sources: dict, channels: list[str], cursors: dict[str, int]) -> None:
    """400 for a cursor beyond its source's last id (as the single-source streams answer)."""
    last_ids = {key: source.read_after(cursors.get(key, 0)).last_id for key, (source, _) in job_sources.items()}
    for name in channels:
        channel = service.hub.peek(name)  # a channel that does not exist yet has no messages
        last_ids[source_key("channel", name)] = channel.last_id if channel is not None else 0
    for key, cursor in cursors.items():
        if cursor > last_ids[key]:
            raise ApiError(
                400, "bad_request", f"Last-Event-ID {key}={cursor} is beyond that source's last id {last_ids[key]}"
            )


def _all_delivered(service, jobs: list[str], channels: list[str], cursors: dict[str, int]) -> bool:
    if channels:
        return False  # channels never end
    for job_id in jobs:
        read = service.store.read_after(job_id, cursors.get(source_key("job", job_id), 0))
        if not (read.finished and not read.events):
            return False
    return True

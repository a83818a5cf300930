"""The API's OpenAPI 3.1 contract: one checked-in document, next to the views it describes. Pure.

Written by hand, as data, rather than generated: the views are plain Flask
functions and five of them stream (SSE), which the generators for Flask
(apispec, flask-smorest, spectree, flask-openapi3) describe as an opaque string,
or only after the views are rebuilt around their own decorators. Python rather than a YAML file, so that the
job states and reasons come from app/states.py (a state added there is in the
contract at once) and every operation draws on shared components (errors, the
job object, the event shapes) instead of repeating them. GET /openapi.json
serves it; tests/test_openapi_app.py checks that every Flask route is in it and
every documented path exists, and validates it; tests/test_openapi_fuzz.py
fuzzes the real server against it with schemathesis.

Text/event-stream responses: their ``schema`` describes ONE event (``event``,
``id``, ``retry``, ``data``, the JSON inside ``data`` as ``contentSchema``),
as OpenAPI 3.2's ``itemSchema`` does and as schemathesis reads it on 3.1.

Adding to it: a new route fails tests/test_openapi_app.py until its operation
is in ``_paths()``. Give it ``_responses({...success...}, "400", ...)`` (the
shared error answers by status; 401 and 403 come with every non-public
operation), its schemas in ``_components()``, and new query parameters with
``_param``. A new field of the job is a property of ``JOB``; a new state or
end reason goes into app/states.py only.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..fleet.runstate import HOST_STATES, RUN_STATES
from ..fleet.targets import MAX_PARALLEL, MAX_TARGETS
from ..policy.messages import RESERVED_EVENTS
from ..states import ExitReason, JobState, StartFailure

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
JSON = "application/json"
SSE = "text/event-stream"

Schema = dict[str, Any]


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _object(properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = False,
            description: str | None = None) -> Schema:
    """A JSON object; every property is required unless ``required`` says otherwise."""
    schema: Schema = {"type": "object", "properties": properties,
                      "required": list(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


# The JSON error every refusal carries: {"error": <code>, "message": <why>, ...extra fields}.
ERROR = _object(
    {
        "error": {"type": "string", "pattern": "^[a-z0-9_]+$",
                  "description": "A stable machine-readable code (bad_request, bad_json, unauthorized, "
                                 "invalid_ticket, forbidden, cross_site_refused, command_not_allowed, "
                                 "job_not_found, not_found, method_not_allowed, request_timeout, "
                                 "job_not_running, bad_message, request_entity_too_large, "
                                 "unsupported_media_type, rate_limited, too_many_jobs, too_many_subscriptions, "
                                 "too_many_channels, busy, shutting_down)."},
        "message": {"type": "string", "description": "Why, for a person."},
    },
    description="Every 4xx and 5xx answer. Some codes add fields: `limit_bytes` (413 of a publish), "
                "`allowed` (403 command_not_allowed), `job` (409 job_not_running).",
)

JOB_STATE = {"type": "string", "enum": [state.value for state in JobState],
             "description": "See the README's table 'Job states and exit reasons'."}
EXIT_REASON = {"type": "string", "enum": [reason.value for reason in ExitReason]}
START_FAILURE = {"type": "string", "enum": [reason.value for reason in StartFailure]}
JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "A job id (16 hex digits), never reused."}
CHANNEL_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
CHANNEL_EVENT_ID = {"type": "string", "pattern": "^([0-9a-z]{1,32}-)?[0-9]+$",
                    "description": "A channel event id: `<epoch>-<n>`."}
TIMESTAMP = _nullable("string", format="date-time")

STDERR_MODE = {"type": "string", "enum": ["separate", "merged"],
               "description": "`separate`: two pipes, `stdout` and `stderr` events; `merged`: one pipe for both, "
                              "exact order, every event `stdout`."}
STDERR_REQUEST = {"type": ["string", "null"], "enum": ["separate", "merged", None],
                  "description": STDERR_MODE["description"] + " Absent or null: `separate`, or the action's own."}
STDIN_FLAG = {"type": "boolean", "description": "A stdin pipe for POST /jobs/{job_id}/input (where `allow_stdin` "
                                                "or the action allows it, else 400)."}

JOB = _object(
    {
        "id": JOB_ID,
        "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "command": {"type": "string", "description": "argv as one shell-quoted line, for display."},
        "action": _nullable("string", description="The named action it was started as."),
        "params": {"type": ["object", "null"], "description": "The action's parameters."},
        "owner": {"type": "string"},
        "state": JOB_STATE,
        "pid": _nullable("integer"),
        "exit_code": _nullable("integer"),
        "signal": _nullable("integer"),
        "signal_name": _nullable("string"),
        "reason": {"type": ["string", "null"], "enum": [*EXIT_REASON["enum"], *START_FAILURE["enum"], None],
                   "description": "Why it ended (null while it runs)."},
        "error": _nullable("string", description="What went wrong, when the end is not the command's own."),
        "timeout": {"type": "number"},
        "created_at": TIMESTAMP,
        "started_at": TIMESTAMP,
        "ended_at": TIMESTAMP,
        "duration": _nullable("number", description="Seconds from start to end, or to now while running."),
        "output_bytes": {"type": "integer", "minimum": 0},
        "dropped_bytes": {"type": "integer", "minimum": 0,
                          "description": "Output the bounded buffer dropped (still counted in output_bytes)."},
        "cpu_seconds": _nullable("number", description="All of its processes; null where not measurable."),
        "peak_memory_bytes": _nullable("integer", description="All of its processes; null where not measurable."),
        "urls": _object({"self": {"type": "string"}, "events": {"type": "string"}, "output": {"type": "string"}}),
        "request_id": _nullable("string", description="The X-Request-ID of the request that started it."),
        "damaged": {"type": "boolean", "description": "History on disk: part of it could not be read back."},
        "stderr": STDERR_MODE,
        "stdin": {"type": "boolean", "description": "Whether it takes input (POST /jobs/{job_id}/input)."},
        "cancelled_by": _nullable("string", description="Who cancelled it, when auth is on."),
    },
    description="A job's metadata (GET /jobs/{job_id}); also the data of the `jobs` channel's `job` events.",
)

JOB_REQUEST = {
    "description": "Exactly one of `command`, `argv` or `action`. The program must be allowed to the caller "
                   "(403 otherwise); `timeout` is capped by the server's `max_timeout` (and an action's own).",
    "examples": [{"command": "echo hello"}, {"argv": ["echo", "hello", "world"], "timeout": 30}],
    "oneOf": [
        _object({"command": {"type": "string", "minLength": 1, "description": "Split like a shell would "
                                                                               "(shlex), never run by one."},
                 "stderr": STDERR_REQUEST, "stdin": STDIN_FLAG,
                 "timeout": {"$ref": "#/components/schemas/Timeout"}}, ["command"], closed=True),
        _object({"argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                 "stderr": STDERR_REQUEST, "stdin": STDIN_FLAG,
                 "timeout": {"$ref": "#/components/schemas/Timeout"}}, ["argv"], closed=True),
        _object({"action": {"type": "string"}, "params": {"type": ["object", "null"]},
                 "confirm": {"type": "boolean", "description": "Required (true) for actions marked confirm."},
                 "stderr": STDERR_REQUEST, "stdin": STDIN_FLAG,
                 "timeout": {"$ref": "#/components/schemas/Timeout"}}, ["action"], closed=True),
    ],
}

PARAMETER = _object(
    {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": ["string", "integer", "choice"]},
        "description": {"type": "string"},
        "pattern": _nullable("string"),
        "max_length": _nullable("integer"),
        "min": _nullable("integer"),
        "max": _nullable("integer"),
        "choices": {"type": "array", "items": {"type": "string"}},
        "required": {"type": "boolean"},
        "default": {"type": ["string", "integer"]},
    },
    ["name", "type", "description", "required"],
)

ACTION = _object(
    {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "argv": {"type": "array", "items": {"type": "string"}},
        "timeout": _nullable("number"),
        "confirm": {"type": "boolean"},
        "stderr": STDERR_MODE,
        "stdin": {"type": "boolean", "description": "Its jobs take input unless a request says otherwise."},
        "params": {"type": "array", "items": _schema("ActionParameter")},
    }
)

CHANNEL = _object(
    {
        "name": CHANNEL_NAME,
        "system": {"type": "boolean", "description": "`jobs` and `stats`: nobody publishes to them."},
        "subscribers": {"type": "integer", "minimum": 0},
        "last_id": CHANNEL_EVENT_ID,
        "url": {"type": "string"},
    }
)

PRINCIPAL = _object(
    {
        "user": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "via": {"type": "string", "enum": ["token", "session", "proxy", "ticket", "anonymous", "none"]},
    }
)

HEALTH = _object(
    {
        "status": {"type": "string", "enum": ["ok", "degraded", "shutting_down", "store_unavailable"],
                   "description": "`degraded` (still 200): the history on disk is losing bytes (see `degraded`)."},
        "degraded": {"type": "string", "description": "Why the status is `degraded`."},
        "store": {"type": "object", "required": ["backend", "ok"], "properties": {
            "backend": {"type": "string", "enum": ["memory", "history", "redis"]},
            "ok": {"type": "boolean"},
            "latency_ms": {"type": "number", "description": "Redis: a round trip now."},
            "error": {"type": "string", "description": "Redis: why it cannot be reached."},
        }},
        "worker_pid": {"type": "integer"},
        "running_jobs": {"type": "integer", "minimum": 0},
        "max_running_jobs": {"type": "integer"},
        "containment": _object({
            "mode": {"type": "string", "enum": ["cgroup", "process_group"]},
            "cgroup": _nullable("string", description="`delegated` or `mount`; null without cgroups."),
            "limits": {"type": "array", "items": {"type": "string"}},
        }),
        "open_streams": {"type": "integer", "minimum": 0},
        "max_streams": {"type": "integer"},
        "worker_connections": {"type": "integer"},
        "buffered_bytes": {"type": "integer", "minimum": 0},
        "max_buffered_bytes": {"type": "integer"},
    },
    ["status", "worker_pid", "running_jobs", "open_streams", "max_streams"],
)

# The JSON inside an event's data line.
START_EVENT = _object({"type": {"const": "start"}, "job": JOB_ID, "pid": _nullable("integer"),
                       "argv": {"type": "array", "items": {"type": "string"}}})
OUTPUT_EVENT = _object({"type": {"enum": ["stdout", "stderr"]},
                        "out": {"type": "string", "description": "Text; bytes that are not UTF-8 arrive as U+FFFD."}})
EXIT_EVENT = _object(
    {
        "type": {"const": "exit"},
        "reason": EXIT_REASON,
        "code": _nullable("integer"),
        "signal": _nullable("integer"),
        "signal_name": _nullable("string"),
        "duration": _nullable("number"),
        "cpu_seconds": _nullable("number"),
        "peak_memory_bytes": _nullable("integer"),
        "error": {"type": "string"},
        "cancelled_by": {"type": "string", "description": "Who cancelled it (present when a name is known)."},
    },
    ["type", "reason", "code", "signal"],
)
ERR_EVENT = _object({"type": {"const": "error"}, "out": {"type": "string"}, "reason": START_FAILURE,
                     "errno": _nullable("integer")})
JOB_GAP_EVENT = _object({"missed_bytes": {"type": "integer", "minimum": 1}})
CHANNEL_GAP_EVENT = _object({"missed_messages": {"type": "integer", "minimum": 1}})
RESET_EVENT = _object({"missed": {"const": "unknown"}})
BUSY_EVENT = _object({"type": {"const": "busy"}, "retry_ms": {"type": "integer"}, "message": {"type": "string"}})
CHANNEL_MESSAGE = _object(
    {"data": {"description": "What was published (any JSON), or for `job` and `stats` events the server's."},
     "user": _nullable("string", description="The publisher, when authentication is on."),
     "time": {"type": "string", "format": "date-time"}},
)
MULTIPLEXED_EVENT = _object(
    {"source": {"type": "string", "pattern": "^(job|channel):"},
     "id": {"type": ["integer", "string"], "description": "The event's id within its source."},
     "data": {"description": "The event's own data, as the source's stream carries it."}},
)
MULTIPLEXED_GAP = {
    "type": "object", "required": ["source"],
    "properties": {"source": {"type": "string"}, "missed_bytes": {"type": "integer"},
                   "missed_messages": {"type": "integer"}},
}
MULTIPLEXED_RESET = _object({"source": {"type": "string"}, "missed": {"const": "unknown"}})


# Fleets (issue 20): hosts and runs.
HOST_NAME = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
RUN_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "A run id (16 hex digits)."}
UNIX_TIME = _nullable("number", description="Unix seconds.")
HOST = _object(
    {
        "name": HOST_NAME,
        "tags": {"type": "array", "items": HOST_NAME},
        "version": {"type": "string"},
        "running_jobs": {"type": "integer", "minimum": 0},
        "load": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3,
                 "description": "Load averages over 1, 5 and 15 minutes."},
        "last_heartbeat": {"type": "number", "description": "Unix seconds."},
        "state": {"type": "string", "enum": ["up", "stale", "down"],
                  "description": "From the last heartbeat (every second): up within 3 s, stale within 6 s, "
                                 "then down."},
    },
    description="A host that shares the store (with the memory or history store: this host alone, `up`).",
)
HOST_RUN = _object(
    {
        "host": HOST_NAME,
        "job": _nullable("string", pattern="^[0-9a-f]{16}$", description="Its job on that host, once started."),
        "state": {"type": "string", "enum": list(HOST_STATES),
                  "description": "`refused`: the host's own config refused it (see `reason`); `unreachable`: down "
                                 "at the start, or no answer; `lost`: it went away during the run; `skipped`: never "
                                 "started (stop_on_failure, or a DELETE)."},
        "exit_code": _nullable("integer"),
        "reason": _nullable("string", description="Why it ended (the job's end reason, or the refusal's message)."),
        "started_at": UNIX_TIME,
        "ended_at": UNIX_TIME,
    },
    description="One target host's part of a run; also the data of a run stream's `host_state` events.",
)
RUN = _object(
    {
        "id": RUN_ID,
        "state": {"type": "string", "enum": list(RUN_STATES),
                  "description": "`running` while any host is pending or running; then `succeeded` (every "
                                 "host), `failed` (none), `partial`, or `cancelled` (DELETE)."},
        "failed_hosts": {"type": "array", "items": HOST_NAME,
                         "description": "Hosts whose final state is not `succeeded`."},
        "user": {"type": "string"},
        "command": {"type": "string", "description": "For display."},
        "created_at": {"type": "number", "description": "Unix seconds."},
        "ended_at": UNIX_TIME,
        "parallel": _nullable("integer"),
        "stop_on_failure": {"type": "boolean"},
        "hosts": {"type": "array", "items": _schema("HostRun")},
    },
    description="A run (GET /runs/{run_id}); also the data of a run stream's `run_exit` event.",
)
RUN_TARGETS: dict[str, Schema] = {
    "hosts": {"type": "array", "items": HOST_NAME, "minItems": 1, "maxItems": MAX_TARGETS,
              "description": "Target hosts by name (GET /hosts)."},
    "tags": {"type": "array", "items": HOST_NAME, "minItems": 1, "maxItems": MAX_TARGETS,
             "description": "Every host with any of these tags."},
    "parallel": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_PARALLEL,
                 "description": "At most this many hosts at a time, the next starting as one ends; absent or "
                                "null: all at once."},
    "stop_on_failure": {"type": "boolean", "description": "Start no more hosts once one has failed (running ones "
                                                          "are never killed)."},
}
RUN_REQUEST = {
    "description": "What to run, as in POST /jobs (less `stdin`), and where: exactly one of `hosts` or `tags`. "
                   "Each target host decides by its own allowlist, actions and roles (a refusal is its `refused` "
                   "state); the caller's roles must let it target every host (`hosts` of a role), else 403.",
    "examples": [{"argv": ["uptime"], "tags": ["web"]},
                 {"command": "echo hello", "hosts": ["web-1", "web-2"], "parallel": 1, "stop_on_failure": True}],
    "allOf": [
        {"oneOf": [
            _object({**{k: v for k, v in branch["properties"].items() if k != "stdin"}, **RUN_TARGETS},
                    branch["required"], closed=True)
            for branch in JOB_REQUEST["oneOf"]
        ]},
        {"oneOf": [{"required": ["hosts"]}, {"required": ["tags"]}]},
    ],
}
RUN_CREATED = _object({"id": RUN_ID, "url": {"type": "string"}, "events": {"type": "string"},
                       "hosts": {"type": "array", "items": HOST_NAME}})
RUN_JOB_EVENT = _object(
    {"host": HOST_NAME, "job": JOB_ID, "id": {"type": "integer", "description": "The event's id in its job."},
     "data": {"description": "The job event's own data (see the job stream)."}},
)
RUN_GAP_EVENT = _object({"host": HOST_NAME, "job": JOB_ID, "missed_bytes": {"type": "integer", "minimum": 1}})
RUN_STREAM_TEXT = """Every target host's job events, and each host's state, on one stream; it ends with `run_exit`.
Not bound by `max_stream_sources`. Resume with `Last-Event-ID` (an opaque string): nothing is lost or sent twice.

| event | data |
|---|---|
| `start`, `stdout`, `stderr`, `exit`, `err` | `{"host", "job", "id": <its id in its job>, "data": <its data>}` |
| `gap` | `{"host", "job", "missed_bytes"}`: output the job's bounded buffer dropped |
| `host_state` | a host's entry of GET /runs/{run_id} `hosts`, when it changes (running, then its final state) |
| `run_exit` | GET /runs/{run_id}'s body: the last event |
| `busy` | as on job streams |

The `schema` below describes one event."""


def _event_stream(by_kind: dict[str, Schema], other: Schema | None = None) -> Schema:
    """One server-sent event: its type (``event``) decides the JSON shape inside ``data``."""
    kinds = list(by_kind)
    rules: list[Schema] = [
        {"if": {"required": ["event"], "properties": {"event": {"const": kind}}},
         "then": {"properties": {"data": {"contentMediaType": JSON, "contentSchema": shape}}}}
        for kind, shape in by_kind.items()
    ]
    event: Schema = {"type": "string"}
    if other is None:
        event["enum"] = kinds
    else:
        rules.append({"if": {"required": ["event"], "properties": {"event": {"not": {"enum": kinds}}}},
                      "then": {"properties": {"data": {"contentMediaType": JSON, "contentSchema": other}}}})
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"event": event, "id": {"type": "string"}, "retry": {"type": "integer"},
                       "data": {"type": "string"}},
        "allOf": rules,
    }


JOB_EVENTS = {"start": _schema("StartEvent"), "stdout": _schema("OutputEvent"), "stderr": _schema("OutputEvent"),
              "exit": _schema("ExitEvent"), "err": _schema("ErrEvent"), "gap": _schema("JobGapEvent"),
              "busy": _schema("BusyEvent")}
JOB_STREAM_TEXT = """\
The job's events, from the start (or after `Last-Event-ID`), then live until its `exit` or `err` event.
The first bytes are `retry: 2000` and a `: connected` comment; a `: ping` comment follows every
`heartbeat_interval` of silence. Event types, each with one line of JSON data:

| event | data |
|---|---|
| `start` | `{"type": "start", "job", "pid", "argv"}` |
| `stdout`, `stderr` | `{"type": "stdout", "out": "<text>"}` |
| `exit` | `{"type": "exit", "reason", "code", "signal", "signal_name", "duration", "cpu_seconds", \
"peak_memory_bytes"[, "error"][, "cancelled_by"]}` |
| `err` | the command could not start: `{"type": "error", "out", "reason", "errno"}` |
| `gap` | `{"missed_bytes": n}`: output dropped by the bounded buffer before this viewer read it |
| `busy` | `{"type": "busy", "retry_ms", "message"}`: refused beyond `max_streams` (an EventSource's answer) |

Event ids are integers that count output bytes (plus one per other event): resume with `Last-Event-ID`.
The `schema` below describes one event."""

CHANNEL_EVENTS = {"gap": _schema("ChannelGapEvent"), "reset": _schema("ResetEvent"), "busy": _schema("BusyEvent")}
CHANNEL_STREAM_TEXT = """\
The channel's retained messages (after `Last-Event-ID`), then live; the stream does not end by itself.
Each message's event type is the publisher's name (`message` by default; `job` on the `jobs` channel,
and `run` there for a run's start and end, `{"id", "state", "hosts", "user", "command"}`; `stats` on
`stats`), its data `{"data": <what was published>, "user": <publisher or null>, "time"}`, its id
`<epoch>-<n>`. Besides messages:

| event | data |
|---|---|
| `gap` | `{"missed_messages": n}`: the resume is older than the retained history |
| `reset` | `{"missed": "unknown"}`: the resume's id is of another history (a restart since, or a bare number) |
| `busy` | as on job streams |

The `schema` below describes one event."""

MULTIPLEXED_TEXT = """\
Every named job and channel on one stream. Each event keeps its type; its data is
`{"source": "job:<id>" | "channel:<name>", "id": <its id within the source>, "data": <its own data>}`,
except `gap` (`{"source", "missed_bytes" | "missed_messages"}`) and `reset` (`{"source", "missed"}`).
Its id is a composite cursor (`job:3f2a=120,channel:jobs=k3x9ab-7`) that resumes every source at once.
The stream ends when every source is a job and each has ended; with a channel it does not end by itself.
The `schema` below describes one event."""


def _param(name: str, where: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


def _header(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "schema": schema or {"type": "string"}}


def _json_response(description: str, schema: Schema, headers: dict[str, Schema] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, schema: Schema | None = None, headers: dict[str, Schema] | None = None) -> Schema:
    return _json_response(description, schema or _schema("Error"), headers)


RETRY_AFTER = {"Retry-After": _header("Seconds to wait before trying again.", {"type": "string",
                                                                              "pattern": "^[0-9]+$"})}
RESPONSES = {
    "BadRequest": _error("The request is malformed or a value is out of range (`bad_request`, `bad_json`)."),
    "Unauthorized": _error(
        "No credentials, or refused ones (`unauthorized`, `invalid_ticket`).",
        headers={"WWW-Authenticate": _header("`Bearer realm=\"sse-commander\"` (with `error=\"invalid_token\"` "
                                             "for a refused token).")},
    ),
    "Forbidden": _error(
        "Not allowed: the caller's roles, a program off the allowlist (`command_not_allowed`, with `allowed`), "
        "a cross-site browser request (`cross_site_refused`), a Host name not served, a ticket used elsewhere."
    ),
    "NotFound": _error("No such job, or one the caller may not see (`job_not_found`)."),
    "RequestTimeout": _error("The body did not arrive within `body_timeout`; the connection is closed."),
    "PayloadTooLarge": _error("The body is larger than `max_body_bytes`."),
    "UnsupportedMediaType": _error("The body must be JSON: send `Content-Type: application/json`."),
    "TooManyRequests": _error(
        "A limit: job starts or publishes per user (`rate_limited`), running jobs for the worker or the user "
        "(`too_many_jobs`), channel subscriptions (`too_many_subscriptions`), channels (`too_many_channels`), "
        "login attempts.", headers=RETRY_AFTER,
    ),
    "StreamBusy": _error(
        "`busy`: the worker holds `max_streams` streams already (a client asking for text/event-stream gets a "
        "200 with one `busy` event instead); `shutting_down` while the server restarts; `store_unavailable` while "
        "the shared store (Redis) cannot be reached.", headers=RETRY_AFTER,
    ),
}


def _responses(ok: dict[str, Schema], *errors: str, public: bool = False) -> dict[str, Schema]:
    """The success answers, then the shared error answers by status (400 BadRequest, ...)."""
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
             "408": "RequestTimeout", "413": "PayloadTooLarge", "415": "UnsupportedMediaType",
             "429": "TooManyRequests", "503": "StreamBusy"}
    # Every operation meets the browser rules (403: Host names, cross-site requests); all but the public
    # ones the authentication too (401).
    statuses = sorted({"403", *errors, *(() if public else ("401",))})
    return {**ok, **{status: _ref("responses", names[status]) for status in statuses}}


# What a started job's id opens (OpenAPI links: client generators and schemathesis's stateful phase follow them).
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("JobEvents", "jobEvents"),
                            ("JobOutput", "jobOutput"), ("CreateTicket", "createTicket"),
                            ("JobInput", "jobInput"))
}

RUN_LINKS = {
    name: {"operationId": operation, "parameters": {"run_id": "$response.body#/id"}}
    for name, operation in (("GetRun", "getRun"), ("RunEvents", "runEvents"), ("CancelRun", "cancelRun"))
}

# A start refused for the program: the allowlist comes with a command_not_allowed.
START_REFUSED = {"403": _error(
    "Not allowed: a program off the allowlist (`command_not_allowed`, with `allowed`), or one the caller's "
    "roles do not allow (`forbidden`), or the browser rules (`cross_site_refused`).", _schema("CommandNotAllowedError"),
)}


def _sse_response(description: str, schema: Schema, headers: dict[str, Schema] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {SSE: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _json_body(schema: Schema, description: str) -> Schema:
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


def _resume(form: Schema, what: str) -> list[Schema]:
    """The Last-Event-ID header (an EventSource sends it by itself) and the query parameter it wins over."""
    return [_param("Last-Event-ID", "header", form, f"Resume after this {what} (wins over the query parameter)."),
            _param("last_event_id", "query", form, f"Resume after this {what}.")]


JOB_CURSOR = {"type": "string", "pattern": "^[0-9]{0,19}$", "description": "A job's event id; empty or 0: the start."}
CHANNEL_CURSOR = {"type": "string", "pattern": "^(([0-9a-z]{1,32}-)?[0-9]{1,19})?$",
                  "description": "`<epoch>-<n>`; a bare number (an older server's id) gets a `reset`."}
RUN_CURSOR = {"type": "string", "description": "A run stream's event id (opaque)."}
COMPOSITE_CURSOR = {"type": "string", "description": "`job:<id>=<n>,channel:<name>=<epoch>-<n>,...`"}
PUBLIC: list[Schema] = [{}]  # no credentials needed (they are still read when sent)
TICKET_PARAM = _param("ticket", "query", {"type": "string"}, "A stream ticket (POST /jobs/{job_id}/tickets).")
TICKET_OR_LOGIN: list[Schema] = [{"bearerToken": []}, {"sessionCookie": []}, {"proxyUser": []},
                                 {"streamTicket": []}]


def _paths() -> dict[str, Any]:
    job_id = _param("job_id", "path", JOB_ID, "The job's id.")
    run_id = _param("run_id", "path", RUN_ID, "The run's id.")
    channel = _param("name", "path", CHANNEL_NAME, "The channel's name.")
    job_stream = _sse_response(JOB_STREAM_TEXT, _schema("JobStreamEvent"))
    return {
        "/run": {"get": {
            "tags": ["jobs"], "operationId": "runCommand",
            "summary": "Start a command and stream its events on this response (the seed tutorial's interface)",
            "description": "The command lives as long as this response: a disconnect kills its whole process "
                           "group. A reconnect (`Last-Event-ID` present) gets 204 and never runs it again.",
            "parameters": [
                {**_param("command", "query", {"type": "string", "minLength": 1},
                          "The command, split like a shell would (never run by one).", required=True),
                 "example": "echo hello"},
                _param("timeout", "query", {"type": "string", "pattern": r"^[0-9]{1,20}(\.[0-9]{1,20})?$"},
                       "Seconds, within (0, max_timeout]."),
                _param("stderr", "query", STDERR_MODE, "As in POST /jobs (default `separate`)."),
                _param("Last-Event-ID", "header", {"type": "string"},
                       "Sent by a reconnecting EventSource: a valid request is answered 204, and the command is "
                       "not run again."),
            ],
            "responses": _responses(
                {"200": _sse_response(JOB_STREAM_TEXT, _schema("JobStreamEvent"),
                                      {"X-Job-Id": _header("The job's id.", JOB_ID)}),
                 "204": {"description": "A reconnect: the command is not run again."}},
                "400", "429", "503",
            ) | START_REFUSED,
        }},
        "/jobs": {
            "post": {
                "tags": ["jobs"], "operationId": "createJob",
                "summary": "Start a detached job (it outlives its viewers)",
                "requestBody": _json_body(_schema("JobRequest"), "What to run."),
                "responses": _responses(
                    {"201": {**_json_response("Started (or failed to start: see `state`).", _schema("Job"),
                                              {"Location": _header("The job's URL.")}),
                             "links": JOB_LINKS}},
                    "400", "408", "413", "415", "429", "503",
                ) | START_REFUSED,
            },
            "get": {
                "tags": ["jobs"], "operationId": "listJobs", "summary": "Every kept job the caller may see, newest "
                                                                        "first",
                "parameters": [
                    _param("limit", "query", {"type": "string", "pattern": "^[0-9]{1,3}$"},
                           "At most this many jobs (1-500); without it, every kept job."),
                    _param("before", "query", {"type": "string"}, "Go on after this cursor (a previous `next`)."),
                    _param("state", "query", JOB_STATE, "Only jobs in this state."),
                    _param("user", "query", {"type": "string", "minLength": 1, "maxLength": 256},
                           "Only this user's jobs (403 for roles that see only their own, for another user)."),
                    _param("q", "query", {"type": "string", "minLength": 1, "maxLength": 256},
                           "A substring of the command or the action's name."),
                    _param("since", "query", {"type": "string"},
                           "Created at or after: ISO 8601 (2026-12-01T06:00:00Z) or Unix seconds."),
                    _param("until", "query", {"type": "string"}, "Created before: ISO 8601 or Unix seconds."),
                ],
                "responses": _responses(
                    {"200": _json_response("A page of jobs, the next page's cursor, and counts by state for the "
                                           "filter.", _object({
                                               "jobs": {"type": "array", "items": _schema("Job")},
                                               "next": _nullable("string", description="null: no more."),
                                               "counts": {"type": "object",
                                                          "additionalProperties": {"type": "integer"}},
                                           }))},
                    "400",
                ),
            },
        },
        "/jobs/{job_id}": {
            "parameters": [job_id],
            "get": {
                "tags": ["jobs"], "operationId": "getJob", "summary": "One job's metadata",
                "responses": _responses({"200": _json_response("The job.", _schema("Job"))}, "404"),
            },
            "delete": {
                "tags": ["jobs"], "operationId": "cancelJob",
                "summary": "Cancel: SIGTERM to all of the job, SIGKILL after kill_grace",
                "description": "Answers within `kill_grace` + 1 s.",
                "responses": _responses(
                    {"200": _json_response("It has ended: its final state.", _schema("Job")),
                     "202": _json_response("Still `stopping`: not all of it has died yet.", _schema("Job")),
                     "409": _error("`job_not_running`: it has ended already (the job is in `job`).",
                                   _schema("JobNotRunningError"))},
                    "404",
                ),
            },
        },
        "/jobs/{job_id}/input": {
            "parameters": [job_id],
            "post": {
                "tags": ["jobs"], "operationId": "jobInput",
                "summary": "Write to a running job's stdin (text or bytes), or close it (JSON {\"eof\": true})",
                "description": "For those who may cancel the job; audited by size. Never waits: a full pipe "
                               "takes what fits and the rest is refused (409 `input_full`, with `written_bytes`).",
                "requestBody": {"required": True, "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "contentMediaType": "application/octet-stream"}},
                    JSON: {"schema": _object({"eof": {"const": True}}, closed=True)},
                }},
                "responses": _responses(
                    {"200": _json_response("Written (or closed).", _object(
                        {"job": JOB_ID, "written_bytes": {"type": "integer", "minimum": 0},
                         "eof": {"type": "boolean"}})),
                     "409": _error("`input_full` (with `written_bytes`), `no_stdin`, `input_closed`, "
                                   "`job_not_running`, or `input_elsewhere` (it runs on another worker, and no "
                                   "shared store (`store_url`) routes input to it). With `store_url`, input is "
                                   "routed to the worker running the job and answered as a local write is."),
                     "503": _error("`store_unavailable`: the shared store, or the worker running the job, did "
                                   "not answer in time (retry).", headers=RETRY_AFTER)},
                    "400", "404", "408", "413", "415",
                ),
            },
        },
        "/jobs/{job_id}/tickets": {
            "parameters": [job_id],
            "post": {
                "tags": ["jobs"], "operationId": "createTicket",
                "summary": "A stream ticket: a short-lived URL that opens only this job's events and output",
                "responses": _responses({"201": _json_response("The ticket.", _schema("Ticket"))}, "404"),
            },
        },
        "/jobs/{job_id}/events": {
            "parameters": [job_id],
            "get": {
                "tags": ["jobs"], "operationId": "jobEvents",
                "summary": "SSE: replay after Last-Event-ID, then follow live until the job ends",
                "security": TICKET_OR_LOGIN,
                "parameters": [
                    *_resume(JOB_CURSOR, "event id"),
                    TICKET_PARAM,
                ],
                "responses": _responses(
                    {"200": job_stream, "204": {"description": "Resumed after the final event: stop reconnecting."}},
                    "400", "404", "503",
                ),
            },
        },
        "/jobs/{job_id}/output": {
            "parameters": [job_id],
            "get": {
                "tags": ["jobs"], "operationId": "jobOutput",
                "summary": "The combined raw output, byte-exact, followed while the job runs",
                "security": TICKET_OR_LOGIN,
                "parameters": [
                    _param("download", "query", {"type": "string"}, "Any value: answer as an attachment."),
                    TICKET_PARAM,
                ],
                "responses": _responses(
                    {"200": {
                        "description": "The output bytes; or, beyond `max_streams`, to a client that asked for "
                                       "text/event-stream, one `busy` event (see the job stream).",
                        "headers": {
                            "X-Output-Dropped-Bytes": _header("Bytes the bounded buffer dropped before this "
                                                              "answer began.", {"type": "string",
                                                                                "pattern": "^[0-9]+$"}),
                            "Content-Disposition": _header("`inline` or `attachment`, with a file name."),
                        },
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string",
                                                                    "contentMediaType": "application/octet-stream"}},
                            SSE: {"schema": _schema("BusyStreamEvent")},
                        },
                    }},
                    "400", "404", "503",
                ),
            },
        },
        "/actions": {"get": {
            "tags": ["jobs"], "operationId": "listActions",
            "summary": "The named actions the caller may run (with their parameters), and the commands they may type",
            "responses": _responses({"200": _json_response("Actions and commands.", _object({
                "actions": {"type": "array", "items": _schema("Action")},
                "commands": {"type": "array", "items": {"type": "string"}},
                "stdin_allowed": {"type": "boolean", "description": "Whether typed commands may take input "
                                                                    "(`allow_stdin`)."},
            }))}),
        }},
        "/channels": {"get": {
            "tags": ["channels"], "operationId": "listChannels",
            "summary": "The channels the caller may read",
            "responses": _responses({"200": _json_response("The channels.", _object({
                "channels": {"type": "array", "items": _schema("Channel")}}))}),
        }},
        "/channels/{name}/messages": {
            "parameters": [channel],
            "post": {
                "tags": ["channels"], "operationId": "publish", "summary": "Publish a message",
                "requestBody": {
                    "required": True,
                    "description": "JSON `{\"data\": <any JSON>, \"event\": \"name\"}` (event defaults to "
                                   "`message`; not `error`, `open`, `gap`, `reset` or `busy`), or any other "
                                   "content type: the body as UTF-8 text. At most `max_message_bytes`.",
                    "content": {
                        JSON: {"schema": _schema("MessageRequest")},
                        "text/plain": {"schema": {"type": "string", "minLength": 1}},
                    },
                },
                "responses": _responses(
                    {"201": _json_response("Published.", _object({
                        "channel": CHANNEL_NAME, "id": CHANNEL_EVENT_ID, "event": {"type": "string"}}))},
                    "400", "408", "429",
                ) | {"413": _error("`bad_message`: larger than `max_message_bytes` (or `max_body_bytes`).",
                                   _schema("TooLargeError"))},
            },
        },
        "/channels/{name}/events": {
            "parameters": [channel],
            "get": {
                "tags": ["channels"], "operationId": "subscribe",
                "summary": "SSE: the retained history after Last-Event-ID, then live",
                "parameters": _resume(CHANNEL_CURSOR, "message id"),
                "responses": _responses({"200": _sse_response(CHANNEL_STREAM_TEXT, _schema("ChannelStreamEvent"))},
                                        "400", "429", "503"),
            },
        },
        "/events": {"get": {
            "tags": ["channels", "jobs"], "operationId": "multiplexed",
            "summary": "SSE: several jobs and channels over one connection",
            "parameters": [
                {**_param("job", "query", {"type": "array", "items": {"type": "string"}}, "A job id (repeatable)."),
                 "style": "form", "explode": True},
                {**_param("channel", "query", {"type": "array", "items": CHANNEL_NAME},
                          "A channel name (repeatable)."), "style": "form", "explode": True},
                *_resume(COMPOSITE_CURSOR, "composite id"),
            ],
            "responses": _responses(
                {"200": _sse_response(MULTIPLEXED_TEXT, _schema("MultiplexedStreamEvent")),
                 "204": {"description": "Every named job has been delivered to its end: stop reconnecting."}},
                "400", "404", "429", "503",
            ),
        }},
        "/hosts": {"get": {
            "tags": ["fleets"], "operationId": "listHosts",
            "summary": "The hosts that share this store, with their tags and liveness",
            "responses": _responses({"200": _json_response("The hosts, by name.", _object({
                "hosts": {"type": "array", "items": _schema("Host")}}))}, "503"),
        }},
        "/runs": {"post": {
            "tags": ["fleets"], "operationId": "createRun",
            "summary": "Run one command on many hosts (one job per host)",
            "description": "The host that accepts it coordinates it; each job is started on its own host.",
            "requestBody": _json_body(_schema("RunRequest"), "What to run, and where."),
            "responses": _responses(
                {"201": {**_json_response("Accepted: the run, its stream, and its target hosts.",
                                          _schema("RunCreated"), {"Location": _header("The run's URL.")}),
                         "links": RUN_LINKS},
                 "403": _error("`forbidden`: the caller may not run this at all, or may not target `host`.",
                               _schema("RunForbiddenError"))},
                "400", "408", "413", "415", "503",
            ),
        }, "get": {
            "tags": ["fleets"], "operationId": "listRuns",
            "summary": "The newest runs the caller may see, newest first",
            "description": "A user's own runs; every user's for a role that sees every job (`see_all_jobs`: "
                           "admin, viewer). The newest 1000 kept runs are listed at most.",
            "parameters": [
                _param("limit", "query", {"type": "string", "pattern": "^[0-9]{1,3}$"},
                       "At most this many runs (1-200); 50 without it."),
            ],
            "responses": _responses({"200": _json_response("The runs, as GET /runs/{run_id} gives each.", _object({
                "runs": {"type": "array", "items": _schema("Run")}}))}, "400", "503"),
        }},
        "/runs/{run_id}": {
            "parameters": [run_id],
            "get": {
                "tags": ["fleets"], "operationId": "getRun", "summary": "A run: each host's state, and the aggregate",
                "responses": _responses({"200": _json_response("The run.", _schema("Run"))}, "404", "503"),
            },
            "delete": {
                "tags": ["fleets"], "operationId": "cancelRun",
                "summary": "Cancel a run: running hosts' jobs are cancelled, pending hosts skipped",
                "description": "Answers within `kill_grace` + 1 s with the run (an ended run as it is).",
                "responses": _responses({"200": _json_response("The run.", _schema("Run"))}, "404", "503"),
            },
        },
        "/runs/{run_id}/events": {
            "parameters": [run_id],
            "get": {
                "tags": ["fleets"], "operationId": "runEvents",
                "summary": "SSE: every host's events of a run, then run_exit",
                "parameters": _resume(RUN_CURSOR, "run stream id"),
                "responses": _responses(
                    {"200": _sse_response(RUN_STREAM_TEXT, _schema("RunStreamEvent")),
                     "204": {"description": "Resumed after `run_exit`: stop reconnecting."}},
                    "400", "404", "503",
                ),
            },
        },
        "/login": {"post": {
            "tags": ["auth"], "operationId": "login", "security": PUBLIC,
            "summary": "Exchange a token, or a user and password, for a session cookie",
            "requestBody": _json_body(_schema("LoginRequest"), "The credential."),
            "responses": _responses(
                {"200": _json_response("Logged in.", _schema("Principal"), {
                    "Set-Cookie": _header("`ssecmd_session`: signed, HttpOnly, SameSite=Strict, Secure over "
                                          "HTTPS.")})},
                "400", "408", "413", "415", "429",
            ),
        }},
        "/logout": {"post": {
            "tags": ["auth"], "operationId": "logout", "security": PUBLIC, "summary": "Clear the session cookie",
            "responses": _responses({"200": _json_response("Logged out.", _object({"logged_out": {"const": True}}))},
                                    public=True),
        }},
        "/whoami": {"get": {
            "tags": ["auth"], "operationId": "whoami", "summary": "Who the server thinks the caller is",
            "responses": _responses({"200": _json_response("The caller.", {
                "allOf": [_schema("Principal"), _object({"auth_configured": {"type": "boolean"}})]})}),
        }},
        "/healthz": {"get": {
            "tags": ["operations"], "operationId": "health", "security": PUBLIC,
            "summary": "Liveness and a few counters of the worker that answers",
            "responses": {
                "200": _json_response("Serving.", _schema("Health")),
                "503": _json_response("Shutting down, or the shared store is unreachable: balancers should move "
                                      "on.", _schema("Health")),
            },
        }},
        "/openapi.json": {"get": {
            "tags": ["operations"], "operationId": "openapi", "security": PUBLIC,
            "summary": "This document",
            "responses": _responses({"200": _json_response("The OpenAPI document.", {"type": "object"})}, public=True),
        }},
        "/metrics": {"get": {
            "tags": ["operations"], "operationId": "metrics", "security": [{"bearerToken": []}, {}],
            "summary": "Prometheus metrics of this host's workers, added up",
            "description": "Needs a token with the `metrics` role (or a role with `read_metrics`), unless the "
                           "connection's own peer is in `metrics_allow` (default: loopback). nginx as shipped "
                           "does not proxy it.",
            "responses": _responses({"200": {"description": "The Prometheus text exposition format (0.0.4).",
                                             "content": {"text/plain": {"schema": {"type": "string"}}}}},
                                    public=True),
        }},
        "/": {"get": {
            "tags": ["pages"], "operationId": "consolePage", "security": PUBLIC,
            "summary": "The browser console (HTML)",
            "responses": _responses({"200": _html("The page.")}, public=True),
        }},
        "/fleet": {"get": {
            "tags": ["pages"], "operationId": "fleetPage", "security": PUBLIC,
            "summary": "Runs over many hosts (HTML): a host picker, and every host's output live; "
                       "`/fleet#run=<id>` opens a run",
            "responses": _responses({"200": _html("The page.")}, public=True),
        }},
        "/chat": {"get": {
            "tags": ["pages"], "operationId": "chatPage", "security": PUBLIC,
            "summary": "A channel as a chat room (HTML)",
            "parameters": [_param("channel", "query", {"type": "string"}, "The channel (default `chat`).")],
            "responses": _responses({"200": _html("The page.")}, public=True),
        }},
        "/static/{filename}": {"get": {
            "tags": ["pages"], "operationId": "staticFile", "security": PUBLIC,
            "summary": "The pages' scripts, styles and images",
            "parameters": [{**_param("filename", "path", {"type": "string"}, "A file in static/."),
                            "example": "console.js"}],
            "responses": _responses(
                {"200": {"description": "The file.", "content": {"*/*": {"schema": {"type": "string"}}}}}, "404",
                public=True,
            ),
        }},
    }


def _html(description: str) -> Schema:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "bearerToken": {"type": "http", "scheme": "bearer",
                            "description": "A token from `sse-commander token` (`[[tokens]]`)."},
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "ssecmd_session",
                              "description": "From POST /login. Changes made with it must show a same-origin "
                                             "`Origin`, `Referer` or `Sec-Fetch-Site`."},
            "proxyUser": {"type": "apiKey", "in": "header", "name": "X-Forwarded-User",
                          "description": "The user an SSO proxy in `trusted_proxies` names (the header is "
                                         "`user_header`); ignored from anyone else."},
            "streamTicket": {"type": "apiKey", "in": "query", "name": "ticket",
                             "description": "From POST /jobs/{job_id}/tickets: opens only that job's events and "
                                            "output, until `ticket_ttl`."},
        },
        "responses": {name: {**response, "headers": {**response.get("headers", {}), "X-Request-ID": REQUEST_ID}}
                      for name, response in RESPONSES.items()},
        "schemas": {
            "Error": ERROR,
            "TooLargeError": {"allOf": [_schema("Error"), _object({"limit_bytes": {"type": "integer"}})]},
            "CommandNotAllowedError": {"allOf": [_schema("Error"), _object({
                "allowed": {"type": "array", "items": {"type": "string"},
                            "description": "With `command_not_allowed`: the commands on the allowlist."}}, [])]},
            "JobNotRunningError": {"allOf": [_schema("Error"), _object({"job": _schema("Job")})]},
            "Timeout": {"type": ["number", "null"], "exclusiveMinimum": 0,
                        "description": "Seconds (at most `max_timeout`); null or absent: the default "
                                       "(an action's own)."},
            "JobRequest": JOB_REQUEST,
            "Job": JOB,
            "Ticket": _object({
                "ticket": {"type": "string"}, "job": JOB_ID, "expires_at": {"type": "string", "format": "date-time"},
                "urls": _object({"events": {"type": "string"}, "output": {"type": "string"}}),
            }),
            "Action": ACTION,
            "ActionParameter": PARAMETER,
            "Channel": CHANNEL,
            "MessageRequest": _object({"data": {"description": "Any JSON value (nested at most 32 deep)."},
                                       "event": {"type": "string",
                                                 "pattern": "^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
                                                 "not": {"enum": sorted(RESERVED_EVENTS)}}},
                                      ["data"], closed=True),
            "LoginRequest": {"oneOf": [
                _object({"token": {"type": "string", "minLength": 1}}),
                _object({"user": {"type": "string"}, "password": {"type": "string"}}),
            ]},
            "Principal": PRINCIPAL,
            "Health": HEALTH,
            "StartEvent": START_EVENT,
            "OutputEvent": OUTPUT_EVENT,
            "ExitEvent": EXIT_EVENT,
            "ErrEvent": ERR_EVENT,
            "JobGapEvent": JOB_GAP_EVENT,
            "ChannelGapEvent": CHANNEL_GAP_EVENT,
            "ResetEvent": RESET_EVENT,
            "BusyEvent": BUSY_EVENT,
            "ChannelMessage": CHANNEL_MESSAGE,
            "JobStreamEvent": _event_stream(JOB_EVENTS),
            "ChannelStreamEvent": _event_stream(CHANNEL_EVENTS, _schema("ChannelMessage")),
            "MultiplexedStreamEvent": _event_stream(
                {"gap": MULTIPLEXED_GAP, "reset": MULTIPLEXED_RESET, "busy": _schema("BusyEvent")},
                _schema("MultiplexedEvent"),
            ),
            "MultiplexedEvent": MULTIPLEXED_EVENT,
            "BusyStreamEvent": _event_stream({"busy": _schema("BusyEvent")}),
            "Host": HOST,
            "HostRun": HOST_RUN,
            "Run": RUN,
            "RunRequest": RUN_REQUEST,
            "RunCreated": RUN_CREATED,
            "RunForbiddenError": {"allOf": [_schema("Error"), _object({
                "host": {"type": "string", "description": "The first target host the caller may not target."}},
                [])]},
            "RunJobEvent": RUN_JOB_EVENT,
            "RunGapEvent": RUN_GAP_EVENT,
            "RunStreamEvent": _event_stream({
                **{kind: _schema("RunJobEvent") for kind in ("start", "stdout", "stderr", "exit", "err")},
                "gap": _schema("RunGapEvent"), "host_state": _schema("HostRun"), "run_exit": _schema("Run"),
                "busy": _schema("BusyEvent")}),
        },
    }


INFO_TEXT = """\
Run allowlisted commands on a host over HTTP and watch their output live as Server-Sent Events; resume
with `Last-Event-ID`; broadcast channels on the same machinery.

**Authentication.** With `[[tokens]]`, `[[users]]` or `trusted_proxies` configured, every operation but the
public ones needs a Bearer token, the session cookie from POST /login, or an SSO proxy's user header; job
streams also take a stream ticket. With none configured (loopback only), everyone is `anonymous`.

**Errors.** Every refusal is JSON `{"error": "<code>", "message": "<why>"}` with a 4xx status (a few
codes add fields, see `Error`); a method a path does not have gets 405 with `Allow`, an unknown path 404.
Streams beyond `max_streams` get 503 `busy` with `Retry-After`, or, asked for `text/event-stream`, a 200
with one `busy` event. CORS preflights (OPTIONS) are answered for the origins in `cors_allowed_origins`.
Every answer carries security headers (a strict Content-Security-Policy, `X-Content-Type-Options: nosniff`,
`X-Frame-Options: DENY`)."""


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (one shared dict: callers must not change it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "SSE Commander", "version": API_VERSION, "description": INFO_TEXT,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearerToken": []}, {"sessionCookie": []}, {"proxyUser": []}],
        "tags": [
            {"name": "jobs", "description": "Commands as jobs, their events and output"},
            {"name": "channels", "description": "Broadcast channels"},
            {"name": "fleets", "description": "Hosts sharing a store, and runs of one command on many of them"},
            {"name": "auth", "description": "Browser login"},
            {"name": "operations", "description": "Health and this contract"},
            {"name": "pages", "description": "The browser console and chat"},
        ],
        "paths": _with_request_id(_paths()),
        "components": _components(),
    }


REQUEST_ID = _header("This request's id: the trusted proxy's X-Request-ID, or one made here. The same id is in "
                     "every log line of the request and in the metadata of a job it starts.")


def _with_request_id(paths: dict[str, Any]) -> dict[str, Any]:
    """Every answer carries X-Request-ID (shared error answers get it in _components)."""
    for operations in paths.values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue  # path-level parameters
            for response in operation["responses"].values():
                if "$ref" not in response:
                    response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    return paths

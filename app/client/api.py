"""Requests to the server, with one-line errors: never a traceback, never a page of HTML."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from importlib import metadata
from typing import Any

import httpx

from .connection import Connection
from .exitcodes import EXIT_CLIENT_ERROR

# Plain requests: a DELETE answers once the job has ended (kill_grace plus a little), well within 30 s.
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Streams: the server sends a heartbeat after 15 s of silence (heartbeat_interval), so a minute without a
# byte means the connection is dead even if no FIN or RST ever arrives; the follower then reconnects.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
# Raw output has no heartbeat: a silent job may say nothing for hours.
OUTPUT_TIMEOUT = httpx.Timeout(10.0, read=None)
# A stream is retried on these (a restarting server, or a proxy in front of one); a plain request only on 503,
# the one answer that says the request was not acted on (a POST behind a 504 may have started its job).
RETRYABLE_STATUSES = frozenset({502, 503, 504})
DEFAULT_RETRY_AFTER = 2.0
GIVE_UP_503_AFTER = 60.0  # a plain request keeps retrying a restarting server this long


class ClientError(Exception):
    """A failure the client reports in one line on stderr; the exit status is 255 unless said otherwise."""

    def __init__(self, message: str, exit_code: int = EXIT_CLIENT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Refused(ClientError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def retry_after(response: httpx.Response, default: float = DEFAULT_RETRY_AFTER) -> float:
    """Seconds from a Retry-After header given in seconds (the server's form), else ``default``."""
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if re.fullmatch(r"[0-9]{1,6}", value) else default


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The server's JSON error object, or {} for anything else (a proxy's HTML page, say)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def describe_refusal(
    status: int, body: Mapping[str, Any], *, reason_phrase: str = "", token_sent: bool = False,
    retry_in: float | None = None, can_wait: bool = False,
) -> str:
    """One line for an error answer, naming what to do about it. Pure."""
    message = str(body.get("message") or reason_phrase or "error")
    if status == 401:
        hint = ("the server refused the token from SSECMD_TOKEN or --token-file" if token_sent
                else "the server wants a token: set SSECMD_TOKEN or pass --token-file")
        return f"not authenticated: {hint} ({message}) (401)"
    if status == 403:
        allowed = body.get("allowed")
        extra = f" (allowed: {' '.join(allowed)})" if isinstance(allowed, list) and allowed else ""
        return f"forbidden: {message}{extra} (403)"
    if status == 404:
        return f"not found: {message} (404)"
    if status == 429:
        when = f"; the server says retry in {retry_in:g} s" if retry_in is not None else ""
        return f"too many requests: {message}{when}" + ("; pass --wait to wait for it" if can_wait else "") + " (429)"
    if status >= 500:
        return f"the server failed: {message} ({status})"
    return f"{message} ({status})"


def describe_transport_error(exc: httpx.TransportError, url: str) -> str:
    """One line for a failure below HTTP: refused, unreachable, timed out, cut."""
    detail = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return f"cannot connect to {url}: timed out"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {detail[:1].lower() + detail[1:]} (is the server running? see --url)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time"
    return f"the connection to {url} broke: {detail}"


def _version() -> str:
    try:
        return metadata.version("sse-commander")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


class Api:
    """The server's HTTP interface, as the commands use it."""

    def __init__(self, connection: Connection, *, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None,
                 checkpoint: Callable[[], None] | None = None) -> None:
        self.connection = connection
        self.wait = wait  # on 429, sleep for Retry-After and try again
        self.on_wait = on_wait or (lambda message: None)
        self.checkpoint = checkpoint or (lambda: None)  # runs before each wait: a deferred Ctrl-C ends it
        headers = {"User-Agent": f"sse-commander/{_version()}"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self.http = httpx.Client(base_url=connection.url, headers=headers, timeout=REQUEST_TIMEOUT)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def refusal(self, response: httpx.Response, *, can_wait: bool = False) -> Refused:
        """The Refused error for an error answer."""
        body = error_body(response)
        message = describe_refusal(
            response.status_code, body, reason_phrase=response.reason_phrase,
            token_sent=self.connection.token is not None,
            retry_in=retry_after(response) if "Retry-After" in response.headers else None, can_wait=can_wait,
        )
        return Refused(message, response.status_code, body)

    def transport_error(self, exc: httpx.TransportError) -> ClientError:
        """The ClientError for a failure below HTTP."""
        return ClientError(describe_transport_error(exc, self.connection.url))

    def request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 202), can_wait: bool = False,
        held: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext, **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; Refused for an error answer. 503s are retried for a while; 429s with --wait.

        Each attempt runs inside ``held()`` (where Ctrl-C may wait: a job started must have its id known);
        the waits between attempts do not, and ``checkpoint`` runs before each.
        """
        give_up = time.monotonic() + GIVE_UP_503_AFTER
        while True:
            try:
                with held():
                    response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise self.transport_error(exc) from None
            if response.status_code in ok:
                return response
            if response.status_code == 429 and can_wait and self.wait:
                delay = retry_after(response)
                self.on_wait(f"{error_body(response).get('message', 'too many requests')}; waiting {delay:g} s")
                self.checkpoint()
                time.sleep(delay)
                continue
            if response.status_code == 503 and time.monotonic() < give_up:
                delay = retry_after(response)
                self.on_wait(f"the server answered {response.status_code}; trying again in {delay:g} s")
                self.checkpoint()
                time.sleep(delay)
                continue
            raise self.refusal(response, can_wait=can_wait)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{method} {path}: the server's answer is not JSON") from None

    @contextlib.contextmanager
    def stream(self, path: str, *, headers: Mapping[str, str] | None = None,
               timeout: httpx.Timeout = STREAM_TIMEOUT) -> Iterator[httpx.Response]:
        """An open streaming GET, whatever its status (the caller decides); transport errors propagate."""
        with self.http.stream("GET", path, headers=dict(headers or {}), timeout=timeout) as response:
            yield response

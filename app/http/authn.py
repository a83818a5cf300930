"""Who is asking, and is the request allowed to reach the views at all.

Runs before every request:
- identifies the caller from a stream ticket, a Bearer token, a trusted
  proxy's user header, or the session cookie (in that order), or treats
  everyone as anonymous when no authentication is configured;
- refuses cross-site browser requests (CSRF), including against the
  loopback-only anonymous mode, where "any page you visit" is the attacker;
- answers CORS preflights for configured origins only;
- adds security headers to every response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import gevent
from flask import Flask, Response, g, request

from .. import logs, metrics
from ..config import Settings
from ..policy.access import Credential, Principal, check_password, find_key, find_token
from ..policy.exposure import is_loopback
from ..policy.forwarding import TrustedProxies
from ..policy.signing import InvalidSignedValue, Signer
from .errors import ApiError

log = logging.getLogger(__name__)

SESSION_COOKIE = "ssecmd_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Endpoints a stream ticket may open (read-only, one job).
TICKET_ENDPOINTS = frozenset({"jobs.job_events", "jobs.job_output"})
# GET endpoints that change state (they start a command): treated like POST by the CSRF rules.
STATE_CHANGING_GETS = frozenset({"run.run_command"})
# Endpoints that answer without a login (the browser rules still apply).
# GET /metrics decides for itself (the metrics role, or a peer in metrics_allow).
PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "metrics.scrape", "auth.login", "auth.logout", "pages.index", "pages.fleet", "pages.chat",
     "static", "openapi.openapi_document"}
)
NOBODY = Principal("", (), "none")
# Credentials a browser attaches by itself (a cookie: ours, or an SSO proxy's), so a page on another site could
# use them: a change made with one must show where it comes from.
AMBIENT = frozenset({"session", "proxy"})
# Sec-Fetch-Site values that only a browser sends (pages cannot set it), for a request that no other site made.
NOT_CROSS_SITE = frozenset({"same-origin", "none"})
REFUSALS = frozenset({401, 403, 429})
COUNTED = frozenset({401, 403, 429, 503})  # in the metrics, by error code (admission counts its own busy answers)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sse-commander"'}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="sse-commander", error="invalid_token"'}


class Authenticator:
    """Identifies callers and applies the browser-safety rules."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer
        self.credentials: tuple[Credential, ...] = settings.credentials
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.allowed_origins = frozenset(origin.rstrip("/") for origin in settings.cors_allowed_origins)
        self.allowed_hosts = frozenset(host.lower() for host in settings.allowed_hosts)

    # Identification.

    def identify(self) -> Principal:
        """The caller of the current request, or ApiError 401."""
        ticket = request.args.get("ticket")
        if ticket is not None:
            return self._from_ticket(ticket)
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self._from_bearer(token.strip())
        # Other schemes (a front proxy's HTTP Basic auth, say) are not ours to judge.
        proxied = self._from_proxy()
        if proxied is not None:
            return proxied
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = self._from_session(cookie)
            if principal is not None:
                return principal
        if not self.settings.auth_configured:
            return Principal("anonymous", self.settings.anonymous_roles, "anonymous")
        raise ApiError(
            401,
            "unauthorized",
            "authentication required: send 'Authorization: Bearer <token>' or log in",
            headers=CHALLENGE,
        )

    def _from_ticket(self, value: str) -> Principal:
        if request.endpoint not in TICKET_ENDPOINTS or request.method not in ("GET", "HEAD"):
            raise ApiError(403, "forbidden", "a stream ticket only opens a job's events or output")
        try:
            ticket = self.signer.check_ticket(value)
        except InvalidSignedValue as exc:
            raise ApiError(401, "invalid_ticket", str(exc)) from None
        if ticket.job_id != (request.view_args or {}).get("job_id"):
            raise ApiError(403, "forbidden", "this ticket is for another job")
        return Principal(ticket.user, (), "ticket", ticket_job=ticket.job_id)

    def _from_bearer(self, token: str) -> Principal:
        if not token:
            raise ApiError(401, "unauthorized", "expected 'Authorization: Bearer <token>'", headers=INVALID_TOKEN)
        credential = find_token(self.credentials, token)
        if credential is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token", headers=INVALID_TOKEN)
        return Principal(credential.user, credential.roles, "token")

    def client_address(self) -> str:
        """Where the current request comes from: the peer, or the client a trusted proxy forwards for."""
        return self.proxies.client_address(request.remote_addr or "", request.headers.get("X-Forwarded-For"))

    def _from_proxy(self) -> Principal | None:
        header = self.settings.user_header
        raw = request.headers.get(header)
        if raw is None or not self.proxies:
            return None
        peer = request.remote_addr or ""
        if not self.proxies.trusts(peer):
            log.warning("ignoring %s from untrusted address %s", header, peer)
            return None
        try:
            # WSGI hands headers over as latin-1; proxies send UTF-8 names.
            user = raw.encode("latin-1").decode("utf-8").strip()
        except UnicodeError:
            raise ApiError(401, "unauthorized", f"{header} is not valid UTF-8") from None
        if not user:
            raise ApiError(401, "unauthorized", f"{header} is empty")
        if "," in user:
            # The server joins repeated header lines with commas: which of the users is meant is anyone's guess.
            raise ApiError(401, "unauthorized", f"{header} must be sent once, naming one user (got {user!r})")
        roles = self.settings.proxy_roles
        if self.settings.roles_header and request.headers.get(self.settings.roles_header):
            offered = [r.strip() for r in request.headers[self.settings.roles_header].split(",")]
            roles = tuple(r for r in offered if r in self.settings.roles)
        return Principal(user, tuple(roles), "proxy")

    def _from_session(self, cookie: str) -> Principal | None:
        try:
            user, key = self.signer.session_user(cookie)
        except InvalidSignedValue:
            return None  # a stale cookie is simply not a login
        # The roles of the credential that logged in, not of every credential the user has.
        credential = find_key(self.credentials, user, key)
        if credential is None:
            return None  # that credential was removed from the config
        return Principal(user, credential.roles, "session")

    def login(self, body: dict) -> tuple[Principal, Credential]:
        """Check a token or a user/password pair from POST /login."""
        if not self.credentials:
            raise ApiError(400, "bad_request", "no logins are configured on this server")
        token = body.get("token")
        if isinstance(token, str) and token:
            credential = find_token(self.credentials, token)
        elif isinstance(body.get("user"), str) and isinstance(body.get("password"), str):
            # scrypt takes ~50 ms of CPU: run it off the event loop (hashlib releases the GIL).
            credential = gevent.get_hub().threadpool.apply(
                check_password, (self.credentials, body["user"], body["password"])
            )
        else:
            raise ApiError(400, "bad_request", "send {\"token\": ...} or {\"user\": ..., \"password\": ...}")
        if credential is None:
            raise ApiError(401, "unauthorized", "wrong credentials")
        return Principal(credential.user, credential.roles, "session"), credential

    # Browser safety.

    def check_browser_rules(self, principal: Principal) -> None:
        """Refuse cross-site requests and DNS-rebinding, unless they come with a Bearer token."""
        if request.endpoint == "health.healthz":
            return  # health checks change nothing and come from balancers with any Host
        host = urlsplit(f"//{request.host}").hostname or ""
        if self.allowed_hosts and host not in self.allowed_hosts:
            raise ApiError(403, "forbidden", f"host {host!r} is not in allowed_hosts")
        if principal.via == "token":
            return  # not ambient: a browser never attaches it by itself
        origin = request.headers.get("Origin")
        allowed_origin = origin is not None and origin.rstrip("/") in self.allowed_origins
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site in ("cross-site", "same-site") and not allowed_origin and principal.via != "ticket":
            raise ApiError(403, "cross_site_refused", "cross-site requests are not allowed")
        if request.method in UNSAFE_METHODS or request.endpoint in STATE_CHANGING_GETS:
            source = origin or request.headers.get("Referer")
            if source is not None and not allowed_origin and not self._same_origin(source):
                raise ApiError(403, "cross_site_refused", "request from another origin refused")
            if source is None and principal.via in AMBIENT and fetch_site not in NOT_CROSS_SITE:
                raise ApiError(
                    403,
                    "cross_site_refused",
                    f"a change made with a {'session cookie' if principal.via == 'session' else 'login from the proxy'}"
                    " needs an Origin, Referer or Sec-Fetch-Site header (scripts: use a Bearer token)",
                )
        if principal.via == "anonymous" and not self.allowed_hosts and not is_loopback(host):
            raise ApiError(403, "forbidden", "without authentication only loopback host names are served")

    @staticmethod
    def _same_origin(source: str) -> bool:
        parts = urlsplit(source)
        return f"{parts.scheme}://{parts.netloc}" == request.host_url.rstrip("/")

    def cors_headers(self, response: Response) -> None:
        """Allow configured origins, and no others."""
        origin = request.headers.get("Origin")
        if origin is None or origin.rstrip("/") not in self.allowed_origins:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "Location, Retry-After, X-Job-Id"
        response.vary.add("Origin")


def security_headers(response: Response) -> Response:
    """Headers every response carries."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def install(app: Flask, authenticator: Authenticator, on_refused: Callable[..., None]) -> None:
    """Register the before/after-request hooks; ``on_refused`` audits 401/403/429 answers.

    ``on_refused(principal, status, reason, addr=, method=, path=)``: Service.refused.
    """

    def _request_id() -> str:
        """This request's id (made once): kept from a trusted proxy's X-Request-ID, else new."""
        rid = request.environ.get(logs.REQUEST_ID_ENV)
        if rid is None:
            trusted = authenticator.proxies.trusts(request.remote_addr or "")
            rid = request.environ[logs.REQUEST_ID_ENV] = logs.request_id(request.headers.get("X-Request-ID"), trusted)
            logs.REQUEST_ID.set(rid)
            logs.USER.set(None)
        return rid

    @app.before_request
    def _identify_request():
        _request_id()  # before anything is logged for this request

    @app.before_request
    def _authenticate():
        if request.method == "OPTIONS":
            origin = request.headers.get("Origin", "").rstrip("/")
            if origin in authenticator.allowed_origins:
                response = Response(status=204)
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
                response.headers["Access-Control-Max-Age"] = "600"
                return response
        try:
            principal = authenticator.identify()
        except ApiError:
            if request.routing_exception is not None:
                # No such path (404), or not with this method (405 with Allow): the same answer for
                # anyone, as GET /openapi.json tells anyone what exists; never a 401 for /healthz.
                raise request.routing_exception from None
            if request.endpoint not in PUBLIC_ENDPOINTS:
                raise
            principal = NOBODY
        g.principal = principal
        if principal.user:
            request.environ[logs.USER_ENV] = principal.user
            logs.USER.set(principal.user)
        authenticator.check_browser_rules(principal)
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        status = response.status_code
        body = (response.get_json(silent=True) or {}) if status in COUNTED and not response.is_streamed else None
        if body is not None and body.get("error") != "busy":
            metrics.request_refused(status, str(body.get("error", "other")))
        if body is not None and status in REFUSALS:
            on_refused(
                g.get("principal"), response.status_code, str(body.get("message", "")),
                addr=authenticator.client_address(), method=request.method, path=request.path,
            )
        authenticator.cors_headers(response)
        response.headers["X-Request-ID"] = _request_id()  # admission's refusals come before the hook above
        return security_headers(response)


def current_principal() -> Principal:
    """The caller of the current request (set by the before-request hook)."""
    return g.principal

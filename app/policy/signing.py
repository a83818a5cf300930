"""Signed, expiring session cookies and stream tickets. Pure code (itsdangerous).

A session cookie says "this browser logged in as USER with credential K";
the credential and its roles are looked up again on every request, so
removing it or changing its roles takes effect at once. A stream
ticket says "whoever holds this may read job J" and nothing more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class InvalidSignedValue(ValueError):
    """A cookie or ticket is forged, malformed or expired; ``expired`` tells which."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Ticket:
    """A read grant for one job."""

    job_id: str
    user: str
    expires_at: float


class Signer:
    """Signs and checks the two kinds of value with one secret and separate salts."""

    def __init__(self, secret: str, session_ttl: float, ticket_ttl: float) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt="ssecmd-session")
        self._tickets = URLSafeTimedSerializer(secret, salt="ssecmd-ticket")
        self.session_ttl = session_ttl
        self.ticket_ttl = ticket_ttl

    def session_cookie(self, user: str, credential_key: str) -> str:
        """The cookie value for a user logged in with one particular credential."""
        return self._sessions.dumps({"u": user, "k": credential_key})

    def session_user(self, cookie: str) -> tuple[str, str]:
        """The user a session cookie belongs to, and the key of the credential it was opened with."""
        data = self._load(self._sessions, cookie, self.session_ttl, "session")
        if not isinstance(data, dict) or not isinstance(data.get("u"), str) or not isinstance(data.get("k"), str):
            raise InvalidSignedValue("malformed session")
        return data["u"], data["k"]

    def ticket(self, job_id: str, user: str) -> tuple[str, float]:
        """A ticket for reading ``job_id``, and when it expires."""
        return self._tickets.dumps({"j": job_id, "u": user}), time.time() + self.ticket_ttl

    def check_ticket(self, value: str) -> Ticket:
        """The grant a ticket carries."""
        data, signed_at = self._load(self._tickets, value, self.ticket_ttl, "ticket", with_time=True)
        if not isinstance(data, dict) or not isinstance(data.get("j"), str) or not isinstance(data.get("u"), str):
            raise InvalidSignedValue("malformed ticket")
        return Ticket(data["j"], data["u"], signed_at + self.ticket_ttl)

    @staticmethod
    def _load(serializer, value: str, max_age: float, what: str, with_time: bool = False):
        try:
            data, signed_at = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except SignatureExpired:
            raise InvalidSignedValue(f"{what} expired", expired=True) from None
        except BadSignature:
            raise InvalidSignedValue(f"invalid {what}") from None
        return (data, signed_at.timestamp()) if with_time else data

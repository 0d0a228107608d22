"""ASGI and WSGI middleware: one USED token event for every request that presents a bearer token.

The event says which token (its HMAC fingerprint, :func:`~lineage_ledger.core.crypto.token_fingerprint`;
the raw token is hashed on arrival and goes no further), when (an HLC reading from the emitter when the
request arrived), what (the resource, by default the request path without the query string), the outcome,
from where (client IP, user agent) and under which trace (the W3C ``traceparent`` trace id). Requests
without a bearer token produce nothing.

Decisions, so that every service records the same thing:

* The token comes from ``Authorization: Bearer <token>`` (scheme case-insensitive, RFC 6750 section 2.1).
  The ``access_token`` query parameter (section 2.3) is read only with ``accept_query_token=True``: RFC
  6750 advises against it because URLs end up in logs, and the form-body variant (2.2) is not read at all.
* Outcome: ``ALLOW`` for a status below 400; ``DENY`` for 401 and 403 (the token was refused); no outcome
  for any other status (a 404 or a 500 says nothing about whether the token was accepted) or when the
  application failed before starting a response.
* Client IP: the peer address the server reports. ``X-Forwarded-For`` is used only with
  ``forwarded_hops=N`` (N trusted proxies in front, each appending to the header): the N-th address from
  the right, if it is a valid IP address. Anyone can send the header, so trusting it by default would let
  clients choose their recorded address.
* ``traceparent``: W3C Trace Context (version-traceid-parentid-flags, lowercase hex); a malformed header,
  version ``ff``, or an all-zero trace or parent id gives no trace id.
* Text fields longer than the event schema allows (4,096 characters) are truncated.
* After the ledger's fingerprint secret is rotated (``lineage token-secret rotate``), pass the new secret
  with ``token_secret_version=N``: its ids end in ``.vN``, and the ledger looks raw tokens up under every
  version.

Neither middleware logs or stores the token, and recording never fails the request: an error while
building the event is logged by its type and the response goes out unchanged.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import uuid_utils

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.model import SCHEMA_VERSION, TokenEvent, TokenPayload

__all__ = [
    "EventSink",
    "LineageASGIMiddleware",
    "LineageWSGIMiddleware",
    "bearer_token",
    "outcome_of",
    "parse_traceparent",
]

log = logging.getLogger("lineage_ledger.emitter")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MAX_TEXT: Final = 4096
_MAX_IP: Final = 64
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_PARENT: Final = "0" * 16


class EventSink(Protocol):
    """Where the middleware sends events: an :class:`~lineage_ledger.emitter.Emitter`, or a test double."""

    def emit(self, event: TokenEvent) -> None:
        """Accept one event without waiting for its delivery."""
        ...

    def now(self) -> str:
        """A fresh HLC reading for ``occurred_at``."""
        ...


def parse_traceparent(value: str | bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (32 lowercase hex digits), or None if it is invalid.

    Version 00 must be exactly 55 characters; a later version may be longer if a ``-`` follows the flags
    (the spec's forward-compatibility rule). Version ``ff`` and all-zero trace or parent ids are invalid.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip(" \t")
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_id, parent_id, _flags = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    return trace_id


def bearer_token(authorization: str | bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None for any other scheme."""
    if authorization is None:
        return None
    raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    if len(raw) <= 7 or raw[:7].lower() != b"bearer ":
        return None
    return raw[7:].strip(b" \t") or None


def outcome_of(status: int) -> Literal["ALLOW", "DENY"] | None:
    """``ALLOW`` below 400, ``DENY`` for 401 and 403, else None (see the module docstring)."""
    if 0 < status < 400:
        return "ALLOW"
    if status in (401, 403):
        return "DENY"
    return None


def _query_token(query: str | bytes) -> bytes | None:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if "access_token" not in text:
        return None
    for name, value in parse_qsl(text, keep_blank_values=False, encoding="utf-8", errors="strict"):
        if name == "access_token" and value:
            return value.encode("utf-8")
    return None


def _forwarded_ip(header: str, hops: int) -> str | None:
    parts = [p.strip() for p in header.split(",")]
    if hops < 1 or len(parts) < hops:
        return None
    candidate = parts[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


class _Recorder:
    """What the two middlewares share: fingerprinting and building the event."""

    def __init__(
        self,
        sink: EventSink,
        token_secret: bytes,
        region: str | None,
        forwarded_hops: int,
        accept_query_token: bool,
        version: int = 1,
    ) -> None:
        # InputError now for a short secret, a bad region or version
        token_fingerprint(token_secret, "probe", region, version=version)
        self.sink = sink
        self.secret = bytes(token_secret)
        self.version = version
        self.region = region
        self.forwarded_hops = forwarded_hops
        self.accept_query_token = accept_query_token

    def fingerprint(self, token: bytes) -> str:
        return token_fingerprint(self.secret, token, self.region, version=self.version)

    def record(
        self,
        token_id: str,
        occurred_at: str,
        resource: Callable[[], str],
        status: int,
        peer: str | None,
        forwarded: str | None,
        user_agent: str | None,
        traceparent: str | bytes | None,
    ) -> None:
        try:
            ip = _forwarded_ip(forwarded, self.forwarded_hops) if forwarded and self.forwarded_hops else None
            ip = ip or peer
            event = TokenEvent(
                event_id=str(uuid_utils.uuid7()),
                event_type="USED",
                token_id=token_id,
                occurred_at=occurred_at,
                schema_version=SCHEMA_VERSION,
                payload=TokenPayload(
                    ip=ip[:_MAX_IP] if ip else None,
                    user_agent=user_agent[:_MAX_TEXT] if user_agent else None,
                    resource=resource()[:_MAX_TEXT],
                    outcome=outcome_of(status),
                    trace_id=parse_traceparent(traceparent),
                ),
            )
            self.sink.emit(event)
        except Exception as e:  # recording must never fail the request
            log.warning("could not record a USED token event: %s", type(e).__name__)


def _path_of(scope: Scope) -> str:
    return str(scope.get("path", ""))


class LineageASGIMiddleware:
    """ASGI middleware (FastAPI, Starlette, any ASGI 3 app) that emits one USED event per HTTP request
    carrying a bearer token, after the application has answered. See the module docstring for what is
    recorded; ``resource`` maps the ASGI scope to the recorded resource (default: the path)."""

    def __init__(
        self,
        app: ASGIApp,
        emitter: EventSink,
        token_secret: bytes,
        *,
        region: str | None = None,
        resource: Callable[[Scope], str] = _path_of,
        forwarded_hops: int = 0,
        accept_query_token: bool = False,
        token_secret_version: int = 1,
    ) -> None:
        self.app = app
        self._recorder = _Recorder(
            emitter, token_secret, region, forwarded_hops, accept_query_token, token_secret_version
        )
        self._resource = resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token: bytes | None = None
        user_agent: bytes | None = None
        traceparent: bytes | None = None
        forwarded: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = token or bearer_token(value)
            elif name == b"user-agent":
                user_agent = value
            elif name == b"traceparent":
                traceparent = traceparent or value
            elif name == b"x-forwarded-for":
                forwarded = value if forwarded is None else forwarded + b"," + value
        recorder = self._recorder
        if token is None and recorder.accept_query_token:
            token = _query_token(scope.get("query_string", b""))
        if token is None:
            await self.app(scope, receive, send)
            return
        occurred_at = recorder.sink.now()
        token_id = recorder.fingerprint(token)
        del token
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            client = scope.get("client")
            recorder.record(
                token_id,
                occurred_at,
                lambda: self._resource(scope),
                status,
                str(client[0]) if client else None,
                forwarded.decode("latin-1") if forwarded else None,
                user_agent.decode("latin-1") if user_agent else None,
                traceparent,
            )


def _wsgi_path(environ: WSGIEnvironment) -> str:
    # PEP 3333 hands the path over as latin-1-decoded bytes; browsers and servers send UTF-8.
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    return path.encode("latin-1", "replace").decode("utf-8", "replace")


class _ClosingBody:
    """The response body, calling ``done`` once: when it is exhausted or closed (PEP 3333), whichever
    comes first (some clients, like Werkzeug's test client, read the body without closing it)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._finish()

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


class LineageWSGIMiddleware:
    """WSGI middleware (Flask, Django, any PEP 3333 app) that emits one USED event per request carrying a
    bearer token, once the server closes the response. See the module docstring for what is recorded;
    ``resource`` maps the WSGI environ to the recorded resource (default: SCRIPT_NAME + PATH_INFO)."""

    def __init__(
        self,
        app: WSGIApplication,
        emitter: EventSink,
        token_secret: bytes,
        *,
        region: str | None = None,
        resource: Callable[[WSGIEnvironment], str] = _wsgi_path,
        forwarded_hops: int = 0,
        accept_query_token: bool = False,
        token_secret_version: int = 1,
    ) -> None:
        self.app = app
        self._recorder = _Recorder(
            emitter, token_secret, region, forwarded_hops, accept_query_token, token_secret_version
        )
        self._resource = resource

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        recorder = self._recorder
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None and recorder.accept_query_token:
            token = _query_token(environ.get("QUERY_STRING", ""))
        if token is None:
            return self.app(environ, start_response)
        occurred_at = recorder.sink.now()
        token_id = recorder.fingerprint(token)
        del token
        status = 0

        def observe(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            try:
                status = int(status_line[:3])
            except ValueError:
                status = 0
            return start_response(status_line, headers, exc_info)

        def done() -> None:
            recorder.record(
                token_id,
                occurred_at,
                lambda: self._resource(environ),
                status,
                environ.get("REMOTE_ADDR") or None,
                environ.get("HTTP_X_FORWARDED_FOR"),
                environ.get("HTTP_USER_AGENT"),
                environ.get("HTTP_TRACEPARENT"),
            )

        try:
            body = self.app(environ, observe)
        except BaseException:
            done()
            raise
        return _ClosingBody(body, done)

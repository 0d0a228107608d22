"""The HTTP service's ASGI middleware (body size limit, access log) and its exception handlers, which turn
every error into an RFC 9457 problem answer (problems.py holds the table of statuses).
"""

import logging
import time
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lineage_ledger.core.encoding import TOO_DEEP
from lineage_ledger.errors import LedgerError, PushbackError, StorageFullError
from lineage_ledger.service.problems import HttpProblem, ProblemType, problem_for, problem_response

__all__ = ["AccessLog", "BodyLimit", "add_error_handlers"]

log = logging.getLogger("lineage_ledger.service")

_LOGGED_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for a body over ``max_bytes``, whether declared in Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _problem(self) -> Response:
        return HttpProblem(
            413, "body-too-large", "Request body too large", f"the body exceeds {self.max_bytes} bytes"
        ).response()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._problem()(scope, receive, send)
                return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app answers to a cut-off body is replaced by the 413 below
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._problem()(scope, receive, send)


class AccessLog:
    """One log line per request: method, route template, status, duration and API key id.

    Never the requested path or query string, which could carry a raw token sent by mistake.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<no route>"
            method = scope["method"] if scope["method"] in _LOGGED_METHODS else "OTHER"
            principal = scope.get("state", {}).get("principal", "-")
            log.info(
                "%s %s %d %.1fms key=%s", method, template, status, (time.perf_counter() - started) * 1e3, principal
            )


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error as an RFC 9457 problem: LedgerError by its class (problems.py), HttpProblem as
    raised, validation errors as 422 naming the field, other HTTP errors by status, anything else as 500."""

    async def ledger_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LedgerError)
        if isinstance(exc, StorageFullError):
            request.app.state.lineage.storage.failed(exc)
        response = problem_for(exc)
        if response.status_code >= 500 and not isinstance(exc, PushbackError):
            log.error("ledger error %s", type(exc).__name__, exc_info=exc)
        return response

    async def http_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpProblem)
        return exc.response()

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
        return problem_response(ProblemType(422, "invalid-input", "Invalid input"), str(first.get("msg")), field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the methods of one route; a path can have several
            routes = request.app.router.routes
            matching = [r for r in routes if r.matches(request.scope)[0] != Match.NONE]
            methods = {m for r in matching for m in getattr(r, "methods", None) or ()}
            headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's json.loads of a body gave up
            return problem_response(ProblemType(400, "malformed-body", "Malformed request body"), TOO_DEEP, "body")
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(ProblemType(exc.status_code, slug, str(exc.detail)), str(exc.detail), None, headers)

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected %s", type(exc).__name__, exc_info=exc)
        return problem_response(ProblemType(500, "internal", "Internal error"), "the service failed unexpectedly")

    app.add_exception_handler(LedgerError, ledger_error)
    app.add_exception_handler(HttpProblem, http_problem)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

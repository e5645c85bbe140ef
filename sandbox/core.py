"""What the three sandbox APIs share: routing, the request log, fault injection, serving.

Each API (``bigcommerce``, ``square``, ``activecampaign``) builds a ``SandboxApp``
with its routes and its own auth check and rate limiter; this module serves it
on a loopback port with the standard library's threading HTTP server, so that
faults such as dropped connections and malformed bodies can be produced at the
socket level.

Every app also answers the admin endpoints under ``/__admin/``:
``GET /__admin/requests`` (the request log), ``DELETE /__admin/requests`` (clear it),
``GET|PUT /__admin/faults`` (the fault plan), plus whatever the API adds.
"""
from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise BadJson(str(exc)) from exc


class BadJson(Exception):
    """The client sent a body that is not JSON; each API answers it in its own error shape."""


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as they are, or None for no body
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        try:
            return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate (a poison, sandbox/poison.py): sent as its JSON escape \ud800
            return json.dumps(self.body, separators=(",", ":")).encode()


class ApiError(Exception):
    """Raised by a handler to answer with an error response in the API's own shape."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


FAULT_KINDS = ("5xx", "429", "timeout", "drop", "malformed", "lost_response")


@dataclass
class FaultPlan:
    """Deterministic (by seed) faults applied to a share of requests.

    ``error_rate`` of requests get one of ``kinds``: ``"5xx"`` (500/502/503),
    ``"429"`` (the API's own rate-limit answer), ``"timeout"`` (answer after
    ``timeout_s``), ``"drop"`` (close the socket without an answer),
    ``"malformed"`` (a 200 whose body is cut JSON), ``"lost_response"`` (the
    request is handled and its effect kept, then the socket is closed without an
    answer: what a client sees as a timeout after the server did the write).
    ``slow_ms`` delays every matching answer.

    Only requests matching ``methods`` (all when empty) and ``path_prefix`` are
    faulted; ``after_n`` > 0 additionally faults exactly the N-th matching
    request (kind drawn from ``kinds``), so a test can break one specific call.
    Admin paths are never faulted.
    """

    seed: int = 0
    error_rate: float = 0.0
    kinds: list[str] = field(default_factory=lambda: ["5xx"])
    slow_ms: int = 0
    timeout_s: float = 35.0
    # A burst: the next N matching requests fail with 5xx whatever the rate.
    burst_5xx: int = 0
    methods: list[str] = field(default_factory=list)
    path_prefix: str = ""
    after_n: int = 0

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be a non-empty subset of {FAULT_KINDS}, got {self.kinds}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        self.methods = [method.upper() for method in self.methods]

    def matches(self, request: Request) -> bool:
        return ((not self.methods or request.method in self.methods)
                and request.path.startswith(self.path_prefix))


class FaultInjector:
    def __init__(self, plan: FaultPlan | None = None):
        self.lock = threading.Lock()
        self.set_plan(plan or FaultPlan())

    def set_plan(self, plan: FaultPlan) -> None:
        with self.lock:
            self.plan = plan
            self.rng = random.Random(plan.seed)
            self.matched = 0

    def draw(self, request: Request) -> str | None:
        """The fault for this (non-admin) request, or None."""
        with self.lock:
            if not self.plan.matches(request):
                return None
            self.matched += 1
            if self.plan.burst_5xx > 0:
                self.plan.burst_5xx -= 1
                return "5xx"
            if self.plan.after_n and self.matched == self.plan.after_n:
                return self.rng.choice(self.plan.kinds)
            if self.plan.error_rate and self.rng.random() < self.plan.error_rate:
                return self.rng.choice(self.plan.kinds)
        return None


@dataclass
class LoggedRequest:
    seq: int
    at: float
    method: str
    path: str
    query: str
    status: int
    fault: str | None
    body: Any = None


Handler = Callable[[Request], Response]


class SandboxApp:
    """Routes plus the shared machinery. Subclasses register routes in ``__init__``."""

    name = "sandbox"

    def __init__(self, faults: FaultPlan | None = None):
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.faults = FaultInjector(faults)
        self.log: list[LoggedRequest] = []
        self.log_lock = threading.Lock()
        self.add_route("GET", r"/__admin/requests", self._admin_requests)
        self.add_route("DELETE", r"/__admin/requests", self._admin_clear_requests)
        self.add_route("GET", r"/__admin/faults", self._admin_get_faults)
        self.add_route("PUT", r"/__admin/faults", self._admin_put_faults)

    # -- to be specialised per API ----------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        """Return an error response when the request's credentials are wrong."""
        return None

    def rate_limit(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        """Return (a 429 response or None, headers to add to any response)."""
        return None, {}

    def fault_response(self, kind: str, request: Request) -> Response:
        """The API's own shape for an injected 429 or 5xx."""
        if kind == "429":
            return Response(429, {"error": "Too Many Requests"})
        return Response(503, {"error": "Service Unavailable"})

    def bad_json_response(self, message: str) -> Response:
        return Response(400, {"error": f"malformed JSON: {message}"})

    def not_found_response(self, request: Request) -> Response:
        return Response(404, {"error": "Not Found"})

    # -- routing ----------------------------------------------------------
    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Answer one request; returns the response and the injected fault kind, if any.

        With ``"lost_response"`` the returned response is the real one (its effect is
        kept); the server then drops the connection instead of sending it.
        """
        admin = request.path.startswith("/__admin/")
        fault = None if admin else self.faults.draw(request)
        if fault in ("drop", "timeout", "malformed"):
            return Response(200, b'{"data": [{"id": 1, "broken'), fault
        if fault in ("429", "5xx"):
            return self.fault_response(fault, request), fault
        return self._answer(request, admin), fault

    def _answer(self, request: Request, admin: bool) -> Response:
        limit_headers: dict[str, str] = {}
        if not admin:
            denied = self.authenticate(request)
            if denied is not None:
                return denied
            limited, limit_headers = self.rate_limit(request)
            if limited is not None:
                limited.headers.update(limit_headers)
                return limited
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                try:
                    response = handler(request)
                except ApiError as exc:
                    response = exc.response
                except BadJson as exc:
                    response = self.bad_json_response(str(exc))
                response.headers.update(limit_headers)
                return response
        return self.not_found_response(request)

    def record(self, request: Request, status: int, fault: str | None) -> None:
        if request.path.startswith("/__admin/"):
            return
        body = None
        if request.method in ("POST", "PUT") and request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = request.body.decode(errors="replace")
        with self.log_lock:
            self.log.append(LoggedRequest(len(self.log) + 1, time.time(), request.method, request.path,
                                          "&".join(f"{k}={v}" for k, vs in request.query.items() for v in vs),
                                          status, fault, body))

    # -- admin ------------------------------------------------------------
    def _admin_requests(self, request: Request) -> Response:
        since = int(request.arg("since", "0"))
        with self.log_lock:
            rows = [asdict(r) for r in self.log if r.seq > since]
        return Response(200, {"requests": rows})

    def _admin_clear_requests(self, request: Request) -> Response:
        with self.log_lock:
            self.log.clear()
        return Response(204)

    def _admin_get_faults(self, request: Request) -> Response:
        return Response(200, asdict(self.faults.plan))

    def _admin_put_faults(self, request: Request) -> Response:
        try:
            plan = FaultPlan(**(request.json() or {}))
        except (TypeError, ValueError) as exc:
            return Response(400, {"error": f"invalid fault plan: {exc}"})
        self.faults.set_plan(plan)
        return Response(200, asdict(self.faults.plan))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client waits
    # for a delayed ACK (~40 ms) on every request.
    disable_nagle_algorithm = True
    app: SandboxApp  # set per server

    def log_message(self, *args: Any) -> None:  # the app keeps its own log
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()}, body)
        response, fault = self.server.app.dispatch(request)  # type: ignore[attr-defined]
        self.server.app.record(request, 0 if fault in ("drop", "timeout") else response.status, fault)  # type: ignore[attr-defined]
        plan = self.server.app.faults.plan  # type: ignore[attr-defined]
        if plan.slow_ms and not request.path.startswith("/__admin/") and plan.matches(request):
            time.sleep(plan.slow_ms / 1000)
        if fault == "timeout":
            time.sleep(plan.timeout_s)
        if fault in ("drop", "timeout", "lost_response"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = response.encode()
        self.send_response(response.status)
        headers = {"Content-Type": "application/json"} if payload else {}
        headers.update(response.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def serve(app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> tuple[_Server, threading.Thread]:
    """Serve ``app`` in a background thread; ``port=0`` picks a free port (``server.server_port``)."""
    server = _Server((host, port), _Handler)
    server.app = app  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{app.name}", daemon=True)
    thread.start()
    return server, thread

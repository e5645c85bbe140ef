"""One HTTP session type for every API: auth headers, pacing, retries with backoff.

Each API differs only in how it says "wait": BigCommerce reports its quota in
``X-Rate-Limit-*`` headers, ActiveCampaign allows 5 requests per second and
answers ``Retry-After``, Square publishes no numbers. Those differences live in
small ``Pacer`` objects; the retry loop is the same for all.

Credentials are passed in, never logged: exceptions name the method and path only, and every message
goes through ``ecomsync.redact`` (no header value, URL query string or email). Header values are trimmed
and validated once, here (``clean_token``). Redirects are never followed by ``requests``: a same-origin
redirect of a read is followed here, any other is an ``ApiError`` naming the new location — ``requests``
strips only ``Authorization`` on a host change (and keeps it on an http→https upgrade), never
``X-Auth-Token`` or ``Api-Token``.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests

from ecomsync.redact import redact, register_secret

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# Header values that are not credentials (everything else an ApiSession is given is treated as one).
AUTH_SCHEMES = frozenset({"bearer", "basic", "token"})
PUBLIC_HEADERS = frozenset({"accept", "content-type", "user-agent", "square-version"})
# Transport failures of a read that are safe to repeat.
RETRYABLE_TRANSPORT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                       requests.exceptions.ContentDecodingError)


class ApiError(Exception):
    """A non-retryable answer (4xx other than 429), or retries exhausted."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class AuthError(ApiError):
    """401/403: expired or revoked credentials. Never retried; no watermark may advance."""


class CredentialError(ValueError):
    """A token that cannot be a header value (empty, or control characters inside). Names the header or the
    connection, never the value."""


class RedirectRefused(ApiError):
    """The API answered a redirect the session may not follow (another host, scheme or port, a write, or
    too many hops). Following it would send the credentials elsewhere or silently land nothing."""


def clean_token(value: str | None, where: str) -> str:
    """A token as read from a connection or config: surrounding whitespace (a pasted trailing newline)
    removed; empty or with control characters inside → ``CredentialError`` naming ``where`` only."""
    token = (value or "").strip()
    if not token or any(ord(char) < 32 or ord(char) == 127 for char in token):
        raise CredentialError(f"{where}: the token is empty or contains whitespace/control characters inside; "
                              "paste it again into the Airflow connection's password")
    return token


class Pacer:
    """Decides how long to wait before a request and after a rate-limited answer."""

    def before_request(self) -> None:
        pass

    def after_response(self, response: requests.Response) -> None:
        pass

    def quota_left(self) -> int | None:
        """Requests left in the API's current quota window, when the API says (None otherwise)."""
        return None

    def retry_delay(self, response: requests.Response | None, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): exponential with full jitter."""
        return min(30.0, 0.25 * 2 ** attempt) * (0.5 + random.random() / 2)


class HeaderQuotaPacer(Pacer):
    """BigCommerce: spread the remaining quota over the rest of the window, from the headers.

    ``X-Rate-Limit-Requests-Left`` and ``X-Rate-Limit-Time-Reset-Ms`` say how many
    requests remain and when the window resets. Pacing (not only reacting to 429)
    keeps the store's shared quota from running dry for the merchant's other apps.
    """

    def __init__(self, reserve: int = 1):
        self.reserve = reserve
        self.lock = threading.Lock()
        self.left: int | None = None
        self.reset_at = 0.0
        self.quota: int | None = None

    def before_request(self) -> None:
        with self.lock:
            if self.left is None:
                return
            now = time.monotonic()
            if now >= self.reset_at:
                self.left = None
                return
            if self.left <= self.reserve:
                wait = self.reset_at - now
                self.left = None
            else:
                wait = 0.0
                self.left -= 1
        if wait > 0:
            time.sleep(wait)

    def quota_left(self) -> int | None:
        with self.lock:
            return self.left

    def after_response(self, response: requests.Response) -> None:
        left = response.headers.get("X-Rate-Limit-Requests-Left")
        reset_ms = response.headers.get("X-Rate-Limit-Time-Reset-Ms")
        if left is None or reset_ms is None:
            return
        with self.lock:
            self.left = int(left)
            self.reset_at = time.monotonic() + int(reset_ms) / 1000
            quota = response.headers.get("X-Rate-Limit-Requests-Quota")
            self.quota = int(quota) if quota else self.quota

    def retry_delay(self, response: requests.Response | None, attempt: int) -> float:
        if response is not None and response.status_code == 429:
            reset_ms = response.headers.get("X-Rate-Limit-Time-Reset-Ms")
            if reset_ms:
                return int(reset_ms) / 1000 + 0.05
        return super().retry_delay(response, attempt)


class TokenBucketPacer(Pacer):
    """ActiveCampaign: at most ``rate`` requests per second, no burst, honouring ``Retry-After``; each 429 widens
    the spacing (``MARGIN_STEP``, up to ``MAX_MARGIN``).

    One instance per CRM account is shared by every thread of a process; across
    processes an Airflow pool serialises the tasks that talk to the same account.
    """

    # Starts exactly 1/rate apart can still arrive six in one second: the server counts arrivals, and a
    # request's way there jitters by milliseconds. 3 % of spacing keeps arrivals under the limit (seen in the demo:
    # one 429 per first run without it) at 0.97 of the allowed rate.
    JITTER_MARGIN = 1.03
    # On a busy host the jitter grows beyond that (bench 2026-11-30, three benchmarks and the test suite on two
    # cores: 4 × 429 in ~600 requests). Each 429 widens the spacing by 5 %, for the rest of the process, up to
    # 0.8 of the allowed rate.
    MARGIN_STEP = 1.05
    MAX_MARGIN = 1.25

    def __init__(self, rate: float):
        self.rate = rate
        self.interval = self.JITTER_MARGIN / rate
        self.lock = threading.Lock()
        self.next_slot = 0.0

    def before_request(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def retry_delay(self, response: requests.Response | None, attempt: int) -> float:
        if response is not None and response.status_code == 429:
            with self.lock:
                self.interval = min(self.interval * self.MARGIN_STEP, self.MAX_MARGIN / self.rate)
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                try:
                    delay = float(retry_after)
                except ValueError:
                    delay = 1.0
                # Nobody may send until the server's pause is over.
                with self.lock:
                    self.next_slot = max(self.next_slot, time.monotonic() + delay)
                return delay
        return super().retry_delay(response, attempt)


@dataclass
class RequestStats:
    """Counters of one ApiSession; safe to update from the threads that share the session."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0  # seconds spent waiting for the quota (pacing) or before retries
    by_status: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def count_request(self) -> None:
        with self.lock:
            self.requests += 1

    def count_answer(self, status: int) -> None:
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if status == 429:
                self.rate_limited += 1

    def count_retry(self) -> None:
        with self.lock:
            self.retries += 1

    def count_wait(self, seconds: float) -> None:
        with self.lock:
            self.waited_s += seconds

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "retries": self.retries, "rate_limited": self.rate_limited,
                    "by_status": dict(self.by_status)}


class ApiSession:
    """``request_json`` sends one logical request, retrying what is safe to retry.

    ``retry_unsafe`` must be False for non-idempotent writes (a CRM create): a
    timeout there may have succeeded, so the caller must look the object up
    instead of sending it again.
    """

    def __init__(self, base_url: str, headers: dict[str, str], *, pacer: Pacer | None = None,
                 max_attempts: int = 8, timeout: float = 30.0, verify: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(_checked_headers(headers))
        self.session.headers.setdefault("Accept", "application/json")
        self.session.verify = verify
        self.pacer = pacer or Pacer()
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.sleep = sleep
        self.stats = RequestStats()

    def __repr__(self) -> str:  # never show the auth headers
        return f"ApiSession({self.base_url!r})"

    def request_json(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                     json_body: Any = None, retry_unsafe: bool = True,
                     allow_statuses: frozenset[int] = frozenset(),
                     ) -> tuple[int, Any, requests.structures.CaseInsensitiveDict]:
        """Returns (status, parsed body or None, headers). Raises AuthError / RedirectRefused / ApiError."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            waited = time.monotonic()
            self.pacer.before_request()
            self.stats.count_wait(time.monotonic() - waited)
            self.stats.count_request()
            try:
                response = self._send(method, url, path, params, json_body)
            except RETRYABLE_TRANSPORT as exc:
                last_problem = f"{type(exc).__name__}"
                if not retry_unsafe:
                    raise ApiError(f"{method} {path}: {last_problem}; not retried (unsafe to repeat)") from None
                self._wait_before_retry(None, attempt, last_problem, method, path)
                continue
            except requests.RequestException as exc:
                # InvalidHeader, InvalidURL, …: their text quotes the header value or the URL, so only the type.
                raise ApiError(f"{method} {path}: {type(exc).__name__} (the request could not be sent; "
                               "check the connection's host and token)") from None
            self.pacer.after_response(response)
            status = response.status_code
            self.stats.count_answer(status)
            if status in (401, 403):
                raise AuthError(f"{method} {path}: HTTP {status} — the API rejected the credentials "
                                "(expired or revoked token?); update the Airflow connection.", status,
                                _safe_body(response))
            if status in RETRYABLE_STATUSES:
                last_problem = f"HTTP {status}"
                if not retry_unsafe and status != 429:
                    raise ApiError(f"{method} {path}: HTTP {status}; not retried (unsafe to repeat)", status,
                                   _safe_body(response))
                self._wait_before_retry(response, attempt, last_problem, method, path)
                continue
            if 300 <= status < 400:
                raise ApiError(f"{method} {path}: HTTP {status} without a usable redirect; nothing was read",
                               status)
            if status >= 400 and status not in allow_statuses:
                raise ApiError(redact(f"{method} {path}: HTTP {status}: {_safe_body(response)!r:.500}"), status,
                               _safe_body(response))
            if not response.content:
                return status, None, response.headers
            try:
                return status, parse_json(response.content), response.headers
            except ValueError:
                # A cut or garbled body: the read was safe to repeat.
                last_problem = "malformed JSON body"
                if not retry_unsafe:
                    raise ApiError(f"{method} {path}: {last_problem}; not retried (unsafe to repeat)", status) from None
                self._wait_before_retry(response, attempt, last_problem, method, path)
        raise ApiError(f"{method} {path}: gave up after {self.max_attempts} attempts ({last_problem})")

    def _send(self, method: str, url: str, path: str, params: dict[str, Any] | None,
              json_body: Any) -> requests.Response:
        """One request; redirects only within the same origin (scheme, host, port) and only for a read or a
        307/308 (which keep method and body). Any other redirect is ``RedirectRefused`` naming where it
        pointed — never followed with the credentials, never an empty success."""
        response = self.session.request(method, url, params=params, json=json_body, timeout=self.timeout,
                                        allow_redirects=False)
        for _hop in range(MAX_REDIRECTS):
            if response.status_code not in REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location")
            target = urljoin(response.url or url, location) if location else None
            if target is None or not _same_origin(url, target) or not (
                    method in ("GET", "HEAD") or response.status_code in (307, 308)):
                raise RedirectRefused(
                    f"{method} {path}: HTTP {response.status_code} redirect to {redact(target or '(no Location)')} "
                    "not followed: the credentials stay with "
                    f"{_origin(url)}; update the connection's host if the API moved", response.status_code)
            response.close()
            response = self.session.request(method, target, json=json_body, timeout=self.timeout,
                                            allow_redirects=False)
        if response.status_code in REDIRECT_STATUSES:
            raise RedirectRefused(f"{method} {path}: more than {MAX_REDIRECTS} redirects", response.status_code)
        return response

    def _wait_before_retry(self, response: requests.Response | None, attempt: int, problem: str,
                           method: str, path: str) -> None:
        if attempt >= self.max_attempts:
            return
        self.stats.count_retry()
        delay = self.pacer.retry_delay(response, attempt)
        log.warning("%s %s: %s, retry %d in %.2fs", method, path, problem, attempt, delay)
        self.stats.count_wait(delay)
        self.sleep(delay)


def _checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header values trimmed and validated; credential values registered with ``ecomsync.redact``."""
    checked = {}
    for name, value in headers.items():
        if name.lower() in PUBLIC_HEADERS:
            checked[name] = value
            continue
        checked[name] = clean_token(value, f"the {name} header")
        scheme, _, credential = checked[name].partition(" ")
        if scheme.lower() in AUTH_SCHEMES:  # "Bearer <token>": the token itself must be there
            checked[name] = f"{scheme} {clean_token(credential, f'the {name} header')}"
        register_secret(checked[name])
        register_secret(value)
    return checked


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _same_origin(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    default = {"http": 80, "https": 443}
    return (a.scheme.lower(), (a.hostname or "").lower(), a.port or default.get(a.scheme.lower())) == \
        (b.scheme.lower(), (b.hostname or "").lower(), b.port or default.get(b.scheme.lower()))


def parse_json(body: bytes | str) -> Any:
    """An API answer as Python values, numbers kept faithful: a literal no double can hold (``1e400``) and the
    non-JSON tokens ``NaN``/``Infinity`` that Python's parser accepts stay their literal text as an
    ``orjson.Fragment``, which landing writes back verbatim (Postgres keeps ``1e400`` as a numeric and refuses
    ``NaN``, so that record is rejected with its reason) — instead of becoming ``inf``/``nan``, which have no
    JSON text and which orjson would silently write as ``null``."""
    return json.loads(body, parse_float=_parse_float, parse_constant=_literal)


def _parse_float(text: str) -> float | orjson.Fragment:
    value = float(text)
    return value if math.isfinite(value) else _literal(text)


def _literal(text: str) -> orjson.Fragment:
    return orjson.Fragment(text.encode())


def _safe_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

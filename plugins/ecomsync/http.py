"""One HTTP session type for every API: auth headers, pacing, retries with backoff.

Each API differs only in how it says "wait": BigCommerce reports its quota in
``X-Rate-Limit-*`` headers, ActiveCampaign allows 5 requests per second and
answers ``Retry-After``, Square publishes no numbers. Those differences live in
small ``Pacer`` objects; the retry loop is the same for all.

Credentials are passed in, never logged: exceptions name the method and path only.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A non-retryable answer (4xx other than 429), or retries exhausted."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class AuthError(ApiError):
    """401/403: expired or revoked credentials. Never retried; no watermark may advance."""


class Pacer:
    """Decides how long to wait before a request and after a rate-limited answer."""

    def before_request(self) -> None:
        pass

    def after_response(self, response: requests.Response) -> None:
        pass

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
    """ActiveCampaign: at most ``rate`` requests per second, no burst, honouring ``Retry-After``.

    One instance per CRM account is shared by every thread of a process; across
    processes an Airflow pool serialises the tasks that talk to the same account.
    """

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
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
        self.session.headers.update(headers)
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
                     allow_statuses: frozenset[int] = frozenset()) -> tuple[int, Any, requests.structures.CaseInsensitiveDict]:
        """Returns (status, parsed body or None, headers). Raises AuthError / ApiError."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            self.pacer.before_request()
            self.stats.count_request()
            response: requests.Response | None = None
            try:
                response = self.session.request(method, url, params=params, json=json_body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_problem = f"{type(exc).__name__}"
                if not retry_unsafe:
                    raise ApiError(f"{method} {path}: {last_problem}; not retried (unsafe to repeat)") from None
                self._wait_before_retry(None, attempt, last_problem, method, path)
                continue
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
            if status >= 400 and status not in allow_statuses:
                raise ApiError(f"{method} {path}: HTTP {status}: {_safe_body(response)!r:.500}", status,
                               _safe_body(response))
            if not response.content:
                return status, None, response.headers
            try:
                return status, response.json(), response.headers
            except ValueError:
                # A cut or garbled body: the read was safe to repeat.
                last_problem = "malformed JSON body"
                if not retry_unsafe:
                    raise ApiError(f"{method} {path}: {last_problem}; not retried (unsafe to repeat)", status) from None
                self._wait_before_retry(response, attempt, last_problem, method, path)
        raise ApiError(f"{method} {path}: gave up after {self.max_attempts} attempts ({last_problem})")

    def _wait_before_retry(self, response: requests.Response | None, attempt: int, problem: str,
                           method: str, path: str) -> None:
        if attempt >= self.max_attempts:
            return
        self.stats.count_retry()
        delay = self.pacer.retry_delay(response, attempt)
        log.warning("%s %s: %s, retry %d in %.2fs", method, path, problem, attempt, delay)
        self.sleep(delay)


def _safe_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

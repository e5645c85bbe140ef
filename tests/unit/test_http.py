"""ApiSession against a real loopback server (sandbox.core): retries, auth, pacing."""
from __future__ import annotations

import sys
import threading
import time

import pytest
import requests

from ecomsync.http import (
    ApiError,
    ApiSession,
    AuthError,
    CredentialError,
    HeaderQuotaPacer,
    RedirectRefused,
    TokenBucketPacer,
    clean_token,
)
from ecomsync.redact import error_text
from sandbox.core import FaultPlan, Request, Response, SandboxApp, serve

TOKEN = "s3cr3t-token-value"


class QuotaApp(SandboxApp):
    """A fixed window quota reported in BigCommerce's headers; over it, 429."""

    def __init__(self, quota: int, window_s: float, faults: FaultPlan | None = None):
        super().__init__(faults)
        self.quota, self.window_s = quota, window_s
        self.window_start, self.used, self.lock = time.monotonic(), 0, threading.Lock()
        self.add_route("GET", r"/items", lambda request: Response(200, [{"id": 1}]))

    def authenticate(self, request: Request):
        return None if request.headers.get("x-auth-token") == TOKEN else Response(401, [{"status": 401}])

    def rate_limit(self, request: Request):
        with self.lock:
            now = time.monotonic()
            if now - self.window_start >= self.window_s:
                self.window_start, self.used = now, 0
            reset_ms = int((self.window_s - (now - self.window_start)) * 1000)
            self.used += 1
            headers = {"X-Rate-Limit-Requests-Left": str(max(0, self.quota - self.used)),
                       "X-Rate-Limit-Requests-Quota": str(self.quota),
                       "X-Rate-Limit-Time-Window-Ms": str(int(self.window_s * 1000)),
                       "X-Rate-Limit-Time-Reset-Ms": str(reset_ms)}
            if self.used > self.quota:
                return Response(429, [{"status": 429}]), headers
            return None, headers


@pytest.fixture
def served():
    servers = []

    def start(app):
        server, _ = serve(app)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def no_sleep(_seconds: float) -> None:
    pass


def test_5xx_bursts_are_retried_until_success(served):  # B10
    url = served(QuotaApp(1000, 30, FaultPlan(burst_5xx=3)))
    session = ApiSession(url, {"X-Auth-Token": TOKEN}, sleep=no_sleep)
    status, body, _ = session.request_json("GET", "/items")
    assert (status, body) == (200, [{"id": 1}])
    assert session.stats.retries == 3 and session.stats.requests == 4


def test_malformed_json_and_dropped_connections_are_retried(served):
    for kind in ("malformed", "drop"):
        app = QuotaApp(1000, 30, FaultPlan(seed=1, error_rate=0.5, kinds=[kind]))
        session = ApiSession(served(app), {"X-Auth-Token": TOKEN}, sleep=no_sleep)
        for _ in range(10):
            assert session.request_json("GET", "/items")[1] == [{"id": 1}]
        assert session.stats.retries > 0, kind


def test_expired_credentials_fail_at_once_without_leaking_the_token(served):  # B10, B11
    url = served(QuotaApp(1000, 30))
    session = ApiSession(url, {"X-Auth-Token": "expired-" + TOKEN}, sleep=no_sleep)
    with pytest.raises(AuthError) as excinfo:
        session.request_json("GET", "/items")
    assert excinfo.value.status == 401 and session.stats.requests == 1
    assert TOKEN not in str(excinfo.value) and TOKEN not in repr(session)
    assert "update the Airflow connection" in str(excinfo.value)


def test_a_write_is_not_repeated_blindly_after_a_dropped_connection(served):
    app = QuotaApp(1000, 30, FaultPlan(seed=3, error_rate=1.0, kinds=["drop"]))
    app.add_route("POST", r"/items", lambda request: Response(201, {"id": 2}))
    session = ApiSession(served(app), {"X-Auth-Token": TOKEN}, sleep=no_sleep)
    with pytest.raises(ApiError, match="unsafe to repeat"):
        session.request_json("POST", "/items", json_body={"a": 1}, retry_unsafe=False)
    assert session.stats.requests == 1


def test_header_pacing_keeps_within_the_quota_without_429(served):
    app = QuotaApp(quota=5, window_s=0.5)
    session = ApiSession(served(app), {"X-Auth-Token": TOKEN}, pacer=HeaderQuotaPacer(reserve=0))
    for _ in range(12):
        session.request_json("GET", "/items")
    assert session.stats.rate_limited == 0
    assert session.stats.requests == 12


def test_a_429_waits_for_the_reported_reset(served):
    app = QuotaApp(quota=2, window_s=0.3)
    # No pacing information yet on the first calls of a second session sharing the quota.
    first = ApiSession(served(app), {"X-Auth-Token": TOKEN}, pacer=HeaderQuotaPacer(reserve=0))
    second = ApiSession(first.base_url, {"X-Auth-Token": TOKEN}, pacer=HeaderQuotaPacer(reserve=0))
    first.request_json("GET", "/items")
    first.request_json("GET", "/items")
    assert second.request_json("GET", "/items")[0] == 200
    assert second.stats.rate_limited == 1 and second.stats.retries == 1


def test_token_bucket_is_shared_by_threads(served):
    app = QuotaApp(quota=10_000, window_s=30)
    pacer = TokenBucketPacer(rate=40)
    session = ApiSession(served(app), {"X-Auth-Token": TOKEN}, pacer=pacer)
    stamps: list[float] = []

    def worker():
        for _ in range(5):
            session.request_json("GET", "/items")
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    # 20 requests at 40/s: the bucket spaces them, whatever the thread count.
    assert stamps[-1] - stamps[0] >= 19 / 40 * 0.9


def test_one_session_shared_by_threads_counts_every_request(monkeypatch):
    session = ApiSession("http://127.0.0.1:9", {"X-Auth-Token": TOKEN}, sleep=no_sleep)
    answer = requests.Response()
    answer.status_code, answer._content = 200, b"[]"
    # An instant transport, so the threads meet on the counters rather than on the network.
    monkeypatch.setattr(session.session, "request", lambda *args, **kwargs: answer)
    threads_n, requests_each = 8, 5000

    def worker():
        for _ in range(requests_each):
            session.request_json("GET", "/items")

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost update shows up at once
    try:
        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert session.stats.as_dict() == {"requests": threads_n * requests_each, "retries": 0, "rate_limited": 0,
                                       "by_status": {200: threads_n * requests_each}}


# -- issue 15: redirects, tokens, error texts ---------------------------------------------------------------
class RecordingApp(SandboxApp):
    """Any request is answered 200 with an empty list; every request's headers are kept."""

    def __init__(self):
        super().__init__(None)
        self.seen: list[dict[str, str]] = []
        self.add_route("GET", r"/items", self.record)
        self.add_route("POST", r"/items", self.record)

    def record(self, request: Request, *_groups) -> Response:
        self.seen.append(dict(request.headers))
        return Response(200, [])


class RedirectingApp(SandboxApp):
    """Answers every request to /items with ``status`` and a Location."""

    def __init__(self, location: str, status: int = 302):
        super().__init__(None)
        self.location, self.status = location, status
        for method in ("GET", "POST"):
            self.add_route(method, r"/items", lambda request, *_: Response(self.status, None, {"Location": self.location}))


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("header", ["X-Auth-Token", "Api-Token", "Authorization"])
def test_credentials_never_follow_a_redirect_to_another_host(served, header, status):  # issue 15, B10
    elsewhere = RecordingApp()
    # Another host name for the same loopback server: requests compares host names, so does ApiSession.
    other_port = served(elsewhere).rsplit(":", 1)[1]
    target = f"http://localhost:{other_port}/items?token=abc123&email=ada@example.com"
    session = ApiSession(served(RedirectingApp(target, status)), {header: f"Bearer {TOKEN}"}, sleep=no_sleep)
    with pytest.raises(RedirectRefused) as excinfo:
        session.request_json("GET", "/items")
    message = str(excinfo.value)
    assert f"http://localhost:{other_port}/items" in message  # the error names the new location …
    assert "abc123" not in message and "ada@example.com" not in message and TOKEN not in message  # … no query
    assert elsewhere.seen == []  # nothing reached the other host, let alone the token


def test_a_redirect_to_another_scheme_or_port_is_refused_and_not_an_empty_success(served):  # issue 15
    here = served(RecordingApp())
    port = int(here.rsplit(":", 1)[1])
    for target in (f"https://127.0.0.1:{port}/items", f"http://127.0.0.1:{port + 1}/items", "/items"):
        session = ApiSession(served(RedirectingApp(target)), {"X-Auth-Token": TOKEN}, sleep=no_sleep)
        if target == "/items":  # same origin, a read: followed (and the redirecting app answers 302 again)
            with pytest.raises(RedirectRefused, match="more than 5 redirects"):
                session.request_json("GET", "/items")
            continue
        with pytest.raises(RedirectRefused, match="not followed"):
            session.request_json("GET", "/items")


def test_a_same_origin_redirect_of_a_read_is_followed_with_the_token(served):
    app = RecordingApp()
    base = served(app)
    app.add_route("GET", r"/old", lambda request, *_: Response(301, None, {"Location": f"{base}/items"}))
    session = ApiSession(base, {"X-Auth-Token": TOKEN}, sleep=no_sleep)
    assert session.request_json("GET", "/old")[:2] == (200, [])
    assert app.seen[0]["x-auth-token"] == TOKEN


def test_a_write_is_never_redirected(served):
    here = served(RecordingApp())
    session = ApiSession(served(RedirectingApp(f"{here}/items", 302)), {"Api-Token": TOKEN}, sleep=no_sleep)
    with pytest.raises(RedirectRefused):
        session.request_json("POST", "/items", json_body={"a": 1})


def test_a_pasted_trailing_newline_is_trimmed_and_a_broken_token_is_refused_without_its_value(served):  # issue 15
    app = QuotaApp(1000, 30)
    session = ApiSession(served(app), {"X-Auth-Token": TOKEN + "\n"}, sleep=no_sleep)
    assert session.request_json("GET", "/items")[0] == 200
    assert clean_token("  " + TOKEN + "\r\n", "conn") == TOKEN
    for broken in ("", "  \n", "abc\ndef-" + TOKEN, TOKEN + "\x00"):
        with pytest.raises(CredentialError) as excinfo:
            ApiSession(served(app), {"Authorization": f"Bearer {broken}"}, sleep=no_sleep)
        assert TOKEN not in str(excinfo.value) and "Authorization" in str(excinfo.value)


def test_no_error_text_carries_a_token_a_header_value_or_a_query(served):  # issue 15, B10
    # requests' own exceptions quote header values and URLs: ApiSession names only their type.
    session = ApiSession("http://127.0.0.1:1", {"X-Auth-Token": TOKEN}, sleep=no_sleep, max_attempts=2)
    with pytest.raises(ApiError) as excinfo:
        session.request_json("GET", "/items", params={"email": "ada@example.com", "key": "abc123"})
    assert "ConnectionError" in str(excinfo.value)
    # and the one scrubber used for every stored error text
    text = error_text(RuntimeError(f"failed GET https://api.example.com/v3/customers?email:in=ada@example.com "
                                   f"with X-Auth-Token: {TOKEN} for Bob@Example.org"))
    assert TOKEN not in text and "ada@example.com" not in text and "Bob@Example.org" not in text
    assert "https://api.example.com/v3/customers?[query]" in text and "[secret]" in text


def test_each_page_wait_for_the_quota_is_counted(served):  # issue 19: progress
    app = QuotaApp(quota=2, window_s=0.3)
    session = ApiSession(served(app), {"X-Auth-Token": TOKEN}, pacer=HeaderQuotaPacer(reserve=0))
    for _ in range(4):
        session.request_json("GET", "/items")
    assert session.stats.waited_s > 0.1 and session.pacer.quota_left() is not None


def rate_limited_answer(retry_after: str = "1") -> requests.Response:
    answer = requests.Response()
    answer.status_code, answer.headers["Retry-After"] = 429, retry_after
    return answer


def test_token_bucket_widens_its_spacing_after_each_429_up_to_a_limit():  # P4
    pacer = TokenBucketPacer(rate=5)
    assert pacer.interval == pytest.approx(1.03 / 5)
    assert pacer.retry_delay(rate_limited_answer(), attempt=1) == 1.0
    assert pacer.interval == pytest.approx(1.03 * 1.05 / 5)
    for attempt in range(50):
        pacer.retry_delay(rate_limited_answer(), attempt=attempt)
    assert pacer.interval == pytest.approx(1.25 / 5)  # never below 0.8 of the allowed rate
    server_error = requests.Response()
    server_error.status_code = 503
    before = pacer.interval
    pacer.retry_delay(server_error, attempt=1)
    assert pacer.interval == before  # only a 429 says the spacing was too tight


def test_one_token_bucket_per_account_and_rate():  # P4
    from ecomsync.crm.activecampaign import account_pacer

    first = account_pacer("https://pacer-test.api-us1.com", 5)
    assert account_pacer("https://PACER-TEST.api-us1.com/", 5) is first  # however the URL is spelt
    assert account_pacer("https://pacer-test.api-us1.com", 4) is not first  # a new rate, a new bucket

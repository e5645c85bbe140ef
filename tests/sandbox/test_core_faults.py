"""Fault injection of sandbox.core, seen through a real HTTP client on loopback."""
from __future__ import annotations

import threading

import pytest
import requests

from sandbox.core import FaultPlan, Request, Response, SandboxApp, serve


class CounterApp(SandboxApp):
    """POST /items creates an item (a visible effect); GET /items lists them."""

    def __init__(self, faults: FaultPlan | None = None):
        super().__init__(faults)
        self.items: list[dict] = []
        self.lock = threading.Lock()
        self.add_route("POST", r"/items", self.create)
        self.add_route("GET", r"/items", lambda request: Response(200, {"items": self.items}))

    def create(self, request: Request) -> Response:
        with self.lock:
            item = {"id": len(self.items) + 1, **(request.json() or {})}
            self.items.append(item)
        return Response(201, item)


@pytest.fixture
def served():
    servers = []

    def start(plan: FaultPlan | None = None) -> tuple[str, CounterApp]:
        app = CounterApp(plan)
        server, _ = serve(app)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", app

    yield start
    for server in servers:
        server.shutdown()


def logged(url: str) -> list[dict]:
    return requests.get(f"{url}/__admin/requests", timeout=5).json()["requests"]


def test_429_and_5xx_are_answered_without_running_the_handler(served):  # B10
    for kind, status in (("429", 429), ("5xx", 503)):
        url, app = served(FaultPlan(error_rate=1.0, kinds=[kind]))
        answer = requests.post(f"{url}/items", json={"n": 1}, timeout=5)
        assert answer.status_code == status
        assert app.items == []
        assert logged(url)[0]["fault"] == kind


def test_a_5xx_burst_fails_exactly_the_next_n_requests(served):  # B10
    url, _ = served(FaultPlan(burst_5xx=2))
    statuses = [requests.get(f"{url}/items", timeout=5).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]


def test_timeout_leaves_the_client_waiting_without_an_answer(served):
    url, app = served(FaultPlan(error_rate=1.0, kinds=["timeout"], timeout_s=1.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{url}/items", json={"n": 1}, timeout=0.3)
    assert app.items == []


def test_drop_closes_the_connection_and_does_nothing(served):
    url, app = served(FaultPlan(error_rate=1.0, kinds=["drop"]))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{url}/items", json={"n": 1}, timeout=5)
    assert app.items == []
    assert logged(url)[0]["status"] == 0


def test_malformed_answers_200_with_cut_json(served):
    url, app = served(FaultPlan(error_rate=1.0, kinds=["malformed"]))
    answer = requests.get(f"{url}/items", timeout=5)
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_lost_response_keeps_the_effect_but_sends_no_answer(served):  # S6
    url, app = served(FaultPlan(error_rate=1.0, kinds=["lost_response"], methods=["POST"]))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{url}/items", json={"order": "A-1"}, timeout=5)
    assert app.items == [{"id": 1, "order": "A-1"}]
    # A blind retry of the non-idempotent POST creates a second object.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{url}/items", json={"order": "A-1"}, timeout=5)
    assert [item["order"] for item in requests.get(f"{url}/items", timeout=5).json()["items"]] == ["A-1", "A-1"]
    entry = logged(url)[0]
    assert (entry["status"], entry["fault"]) == (201, "lost_response")


def test_faults_target_only_the_given_methods_and_path_prefix(served):
    url, app = served(FaultPlan(error_rate=1.0, kinds=["5xx"], methods=["post"], path_prefix="/items"))
    assert requests.get(f"{url}/items", timeout=5).status_code == 200
    assert requests.post(f"{url}/items", json={}, timeout=5).status_code == 503
    assert requests.post(f"{url}/other", json={}, timeout=5).status_code == 404  # not matched: no fault


def test_after_n_breaks_exactly_the_nth_matching_request(served):
    url, app = served(FaultPlan(after_n=3, kinds=["lost_response"], methods=["POST"]))
    outcomes = []
    for n in range(5):
        requests.get(f"{url}/items", timeout=5)  # GETs do not count towards after_n
        try:
            outcomes.append(requests.post(f"{url}/items", json={"n": n}, timeout=5).status_code)
        except requests.exceptions.ConnectionError:
            outcomes.append("lost")
    assert outcomes == [201, 201, "lost", 201, 201]
    assert [item["n"] for item in app.items] == [0, 1, 2, 3, 4]


def test_the_same_seed_gives_the_same_faults(served):
    def pattern(seed: int) -> list[int]:
        url, _ = served(FaultPlan(seed=seed, error_rate=0.5, kinds=["429", "5xx"]))
        return [requests.get(f"{url}/items", timeout=5).status_code for _ in range(20)]

    first = pattern(7)
    assert first == pattern(7)
    assert {200, 429, 503} <= set(first)


def test_the_plan_is_set_over_http_and_admin_paths_are_never_faulted(served):
    url, _ = served()
    plan = {"error_rate": 1.0, "kinds": ["drop"], "methods": ["POST"], "path_prefix": "/items", "after_n": 0}
    answer = requests.put(f"{url}/__admin/faults", json=plan, timeout=5)
    assert answer.status_code == 200 and answer.json()["kinds"] == ["drop"]
    assert requests.get(f"{url}/__admin/faults", timeout=5).json()["methods"] == ["POST"]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{url}/items", json={}, timeout=5)
    bad = requests.put(f"{url}/__admin/faults", json={"kinds": ["explode"]}, timeout=5)
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    assert requests.put(f"{url}/__admin/faults", json={"no_such_option": 1}, timeout=5).status_code == 400

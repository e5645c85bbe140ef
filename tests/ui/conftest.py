"""The demo-shaped warehouse, built once per session for the tests of what people look at."""
from __future__ import annotations

import os
import uuid

import pytest
from demo_data import DemoSandboxes, build_demo_warehouse


@pytest.fixture(scope="session")
def demo_warehouse(local_pg, tmp_path_factory) -> dict:
    """``{"url", "results", "sandboxes"}``: a database holding what one ``make demo`` produces."""
    name = f"test_demo_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    sandboxes = DemoSandboxes()
    try:
        results = build_demo_warehouse(url, tmp_path_factory.mktemp("demo"), sandboxes, rejected_contacts=2)
        yield {"url": url, "results": results, "sandboxes": sandboxes}
    finally:
        sandboxes.close()
        local_pg.drop_database(name)

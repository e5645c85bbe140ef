"""The FastAPI app behind the status page, mounted on the Airflow API server by the plugin.

Routes (under the plugin's ``url_prefix``, ``/ecomsync``):

- ``GET /status/`` — the HTML page (``page.render``).
- ``GET /status.json`` — the same report as JSON.
- ``GET /dbt-docs/`` — the analysts' dbt docs: the one-page site ``dbt docs generate --static`` writes
  (``ecomsync.dbt.generate_docs``), built on the first request when missing and again with ``?rebuild=1``.

The warehouse is read on every request (``WAREHOUSE_URL``, as the tasks read it). A warehouse that cannot be
reached or read gives a 503 page that says so; missing tables give "no data yet". ``dependencies`` are
FastAPI dependencies every route requires — the plugin passes Airflow's authenticated-user check.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from ecomsync.status.masking import mask_text
from ecomsync.status.page import render, render_problem
from ecomsync.status.report import read_status

log = logging.getLogger(__name__)

def create_app(warehouse_url: Callable[[], str], docs_page: Callable[[], Path] | None = None,
               build_docs: Callable[[], Path] | None = None,
               dependencies: Sequence[Callable[..., Any]] = ()) -> FastAPI:
    """``docs_page()`` is where the dbt docs page is (or will be); ``build_docs()`` builds it and returns it."""
    app = FastAPI(title="ecomsync status", dependencies=[Depends(d) for d in dependencies],
                  docs_url=None, redoc_url=None, openapi_url=None)

    def read():
        try:
            return read_status(warehouse_url()), None
        except Exception as exc:  # a status page reports the problem, it never fails with a 500
            log.exception("status page: cannot read the warehouse")
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return None, f"The warehouse cannot be read right now: {mask_text(first_line)}"

    @app.get("/status", include_in_schema=False)
    def status_redirect() -> RedirectResponse:
        return RedirectResponse("status/")

    @app.get("/status/", response_class=HTMLResponse)
    def status_page() -> HTMLResponse:
        report, problem = read()
        if report is None:
            return HTMLResponse(render_problem(problem or ""), status_code=503)
        return HTMLResponse(render(report, docs_href="../dbt-docs/" if docs_page else None))

    @app.get("/status.json")
    def status_json() -> JSONResponse:
        report, problem = read()
        if report is None:
            return JSONResponse({"error": problem}, status_code=503)
        return JSONResponse(_jsonable(dataclasses.asdict(report)))

    if docs_page is not None:
        docs_lock = threading.Lock()

        @app.get("/dbt-docs", include_in_schema=False)
        def docs_redirect() -> RedirectResponse:
            return RedirectResponse("dbt-docs/")

        @app.get("/dbt-docs/", response_model=None)
        def dbt_docs(rebuild: bool = False) -> FileResponse | HTMLResponse:
            with docs_lock:  # one build at a time; a second request waits for it and serves its result
                page = docs_page()
                if (rebuild or not page.is_file()) and build_docs is not None:
                    try:
                        page = build_docs()
                    except Exception as exc:
                        log.exception("dbt docs: build failed")
                        return HTMLResponse(render_problem(f"The dbt docs could not be built: "
                                                           f"{mask_text(str(exc).splitlines()[0])}"), 503)
            if not page.is_file():
                return HTMLResponse(render_problem("The dbt docs have not been built yet: run "
                                                   "`python -m ecomsync.dbt docs` with WAREHOUSE_URL set."), 404)
            return FileResponse(page, media_type="text/html")

    return app


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k.isoformat() if isinstance(k, date) else str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value

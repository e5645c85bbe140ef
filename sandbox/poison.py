"""Poison records: values outside the official schema, served on purpose (issue 15).

Everything a sandbox serves follows the official specs, except what a test set here: a record's fields
replaced *as it is served* by values the spec does not allow — a NUL character or a lone surrogate in a
name, a number where the spec says ``string``, an unknown enum value, ``""`` for money, a garbage date.
The record keeps its place in every list (its stored times and id), so paging and filtering stay as the
spec says; only its payload is hostile, as a real API with a bug or a bad import would send it.

A poison is a map of paths to values: ``"first_name"`` replaces a top-level field,
``"consignments.shipping.0.line_items.0.price_inc_tax"`` one inside (list items by index); ``null`` sets
the JSON ``null``. Admin routes (in each sandbox): ``PUT /__admin/<api>/poison/<kind>/<id>`` with the map
(replaces that record's poison), ``DELETE`` the same path to serve it as the spec says again;
``GET /__admin/bigcommerce/<store>/poison`` lists a store's (the Square sandbox has no list route).
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from sandbox.core import Request, Response


class Poisons:
    """The poisons of one sandbox, by (kind, record id as text)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_record: dict[tuple[str, str], dict[str, Any]] = {}

    def set(self, kind: str, record_id: str, paths: dict[str, Any]) -> None:
        if not isinstance(paths, dict) or not paths:
            raise ValueError("a poison is a JSON object of field paths to values")
        with self.lock:
            self.by_record[(kind, str(record_id))] = dict(paths)

    def clear(self, kind: str, record_id: str) -> None:
        with self.lock:
            self.by_record.pop((kind, str(record_id)), None)

    def listed(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"kind": kind, "id": record_id, "paths": paths}
                    for (kind, record_id), paths in sorted(self.by_record.items())]

    def admin(self, request: Request, invalid: Callable[[str], Exception]) -> Response:
        """The admin route ``PUT|DELETE …/poison/<kind>/<record_id>``; a malformed poison raises ``invalid(message)``
        (each sandbox's own error shape)."""
        kind, record_id = request.params["kind"], request.params["record_id"]
        if request.method == "DELETE":
            self.clear(kind, record_id)
            return Response(204)
        try:
            self.set(kind, record_id, request.json())
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return Response(200, {"kind": kind, "id": record_id, "poison": request.json()})

    def served(self, kind: str, record: Any, record_id: Any = None) -> Any:
        """``record`` as served: a poisoned copy when a poison is set for it, else the record itself."""
        if not self.by_record or not isinstance(record, dict):
            return record
        if record_id is None:
            record_id = record.get("id")
        with self.lock:
            paths = self.by_record.get((kind, str(record_id)))
        if not paths:
            return record
        poisoned = copy.deepcopy(record)
        for path, value in paths.items():
            set_path(poisoned, path, value)
        return poisoned


def set_path(record: Any, path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` (list items by index); a missing object key is created."""
    *parents, last = path.split(".")
    target = record
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value

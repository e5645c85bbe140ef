"""Type-safe reads of API payload fields: the one place a field of a source record is read (issue 15).

A payload is whatever the API sent: any field may be missing, ``null``, or of another JSON type than the
spec says (an email that is a number, an id that is an object, a date that is garbage text). Every reader
here either returns the documented type, ``None`` for a missing/``null`` field (and ``""`` where the spec's
"empty" means missing), or raises ``FieldError`` naming the field and the JSON type it found — never the
value, which may be personal data. Callers decide what an unreadable field means: the extract rejects the
record with its reason (``ecomsync.extract.describe_record``), flags it (``unreadable_field``), or pages past
it (``ecomsync.streams.KeysetPaginator``).

Sources of the formats: BigCommerce v2 dates are RFC 2822 (orders.v2.oas2.yml, ``date_modified`` "Value
in RFC-2822 format"), v3 and Square dates are RFC 3339 / ISO 8601 (customers.v3.yml ``date_modified``,
Square api.json ``updated_at`` "RFC 3339 format"); ids are integers in BigCommerce (``id: integer``) and
strings in Square (``id: string``).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


class FieldError(ValueError):
    """A field holds a value of another type or format than the source documents."""

    def __init__(self, name: str, found: Any, expected: str):
        self.field = name
        super().__init__(f"field {name!r}: expected {expected}, got {json_type(found)}")


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value (``string``, ``number``, ``boolean``, ``null``, ``array``, ``object``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__  # orjson.Fragment (a number no double holds), …


def _get(record: Any, name: str) -> Any:
    if not isinstance(record, Mapping):
        raise FieldError(name, record, "a record that is a JSON object")
    return record.get(name)


def text(record: Any, name: str) -> str | None:
    """A string field: ``str`` or ``None`` when missing or ``null``; any other JSON type is a ``FieldError``."""
    value = _get(record, name)
    if value is None or isinstance(value, str):
        return value
    raise FieldError(name, value, "a string")


def trimmed(record: Any, name: str) -> str:
    """A string field with surrounding white space removed; ``""`` when missing, ``null`` or blank."""
    return (text(record, name) or "").strip()


def integer(record: Any, name: str) -> int | None:
    """An integer field (a JSON integer, or a string of digits as some list filters echo them); ``None`` when
    missing or ``null``. A boolean, a fraction, other text: ``FieldError``."""
    value = _get(record, name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal() and value.strip().isascii():
        return int(value.strip())
    raise FieldError(name, value, "an integer")


def key(record: Any, *names: str) -> str:
    """A record's identifier as text, from the first of ``names`` present (default ``id``): a JSON integer
    (BigCommerce) or a non-empty string (Square) — anything else, or none present, is a ``FieldError``."""
    names = names or ("id",)
    for name in names:
        value = _get(record, name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value:
            return value
        raise FieldError(name, value, "an integer or a non-empty string")
    raise FieldError(names[0], None, "an integer or a non-empty string")


def integer_key(record: Any, name: str = "id") -> int:
    """An integer identifier (BigCommerce ``id``), as an ``int``; missing or anything else: ``FieldError``."""
    value = integer(record, name)
    if value is None:
        raise FieldError(name, None, "an integer")
    return value


def rfc2822_time(record: Any, name: str) -> datetime | None:
    """An RFC 2822 date field (BigCommerce v2) in UTC; see ``parse_rfc2822``."""
    return parse_rfc2822(_get(record, name), name)


def iso_time(record: Any, name: str) -> datetime | None:
    """An ISO 8601 / RFC 3339 time field (BigCommerce v3, Square) in UTC; see ``parse_iso``."""
    return parse_iso(_get(record, name), name)


def parse_rfc2822(value: Any, name: str = "value") -> datetime | None:
    """An RFC 2822 date in UTC (``-0000``, "no zone information", read as UTC as RFC 2822 §3.3 allows);
    ``None`` for ``None`` or ``""``; ``FieldError`` for another JSON type or unparseable text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(name, value, "an RFC 2822 date")
    try:
        parsed = parsedate_to_datetime(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise FieldError(name, value, "an RFC 2822 date") from None


def parse_iso(value: Any, name: str = "value") -> datetime | None:
    """An ISO 8601 / RFC 3339 time in UTC (no zone: UTC); ``None`` for ``None`` or ``""``; ``FieldError``
    for another JSON type or unparseable text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(name, value, "an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise FieldError(name, value, "an ISO 8601 time") from None


def objects(record: Any, name: str) -> list[Any]:
    """An array field (``[]`` when missing or ``null``); another JSON type is a ``FieldError``. The items are
    returned as they are: each is read with these readers in turn."""
    value = _get(record, name)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise FieldError(name, value, "an array")


def mapping(value: Any, name: str) -> Mapping:
    """A JSON object (``{}`` for ``null``); another JSON type is a ``FieldError`` naming ``name``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise FieldError(name, value, "an object")

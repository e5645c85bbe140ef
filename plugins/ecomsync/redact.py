"""The one place where text about a failure is made safe to store, log or raise (docs/security.md).

Every error text the pipeline writes (``state.sync_runs.error``, exception messages of ``ApiSession``, the
reasons of ``state.rejected_records``) goes through ``redact`` or ``error_text``, which remove:

- the value of every credential header an ``ApiSession`` was given (``register_secret``): API tokens,
  ``Bearer`` values — whatever text around them (a requests ``InvalidHeader`` quotes the whole value);
- URL query strings (``/path?email=…&token=…`` → ``/path?[query]``): a query can hold a token or a
  person's email (look-ups by email);
- email addresses (``[email]``): record content that an erasure could not find in free text otherwise;
- for database errors, everything but the primary message: psycopg2 appends ``DETAIL`` and ``CONTEXT``
  lines that quote the offending row (``JSON data, line 1: {"email": …``).
"""
from __future__ import annotations

import re
import threading

import psycopg2

SECRET = "[secret]"
EMAIL = "[email]"
_MIN_SECRET = 4  # shorter values ("1", "abc") would blank ordinary words; no real token is that short

_secrets: set[str] = set()
_lock = threading.Lock()

# A query string after something URL-like: a scheme+host, or a path starting with "/".
_QUERY = re.compile(r"((?:[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#'\"]+)?/[^\s?#'\"]*)\?[^\s#'\"<>)\]}]*")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def register_secret(value: str | None) -> None:
    """Remember a credential so no text produced by ``redact`` can carry it (nor its words: ``Bearer x``
    registers ``x`` too)."""
    if not value:
        return
    with _lock:
        for candidate in (value, value.strip(), *value.split()):
            if len(candidate) >= _MIN_SECRET:
                _secrets.add(candidate)


def redact(text: str) -> str:
    """``text`` without registered secrets, URL query strings and email addresses."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, SECRET)
    text = _QUERY.sub(r"\1?[query]", text)
    return _EMAIL.sub(EMAIL, text)


def error_text(exc: BaseException, limit: int = 2000) -> str:
    """``"<ExceptionType>: <message>"`` safe to store: database errors keep their primary message only."""
    if isinstance(exc, psycopg2.Error):
        primary = exc.diag.message_primary if exc.diag is not None else None
        message = primary or (str(exc).splitlines() or [""])[0]
    else:
        message = str(exc)
    return redact(f"{type(exc).__name__}: {message}")[:limit]

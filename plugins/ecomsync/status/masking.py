"""Personal data out of what the status page shows (docs/security.md: the page is for operators).

``mask_email("Ada.Lovelace@example.com")`` → ``"a***@e***.com"``; ``mask_text`` masks every email address,
every quoted value (the models quote the offending input in ``crm.excluded_records.detail``, e.g.
``email 'ada at example.com' is not a valid address``) and every phone number in international format
(``+49 30 1234567``) in a text.
Record ids (``external_id``, order keys) are not personal and are shown as they are.
"""
from __future__ import annotations

import re

_EMAIL = re.compile(r"[^\s'\"<>()\[\],;:@]+@[^\s'\"<>()\[\],;:@]+")
_QUOTED = re.compile(r"(['\"])(.*?)\1")
_PHONE = re.compile(r"\+\d[\d ()\-/]{5,}\d")  # international format: "+49 30 1234567"


def mask_email(email: str) -> str:
    """First letter of the local part and of the domain, and the top-level domain: ``a***@e***.com``."""
    local, _, domain = email.strip().partition("@")
    name, dot, tld = domain.rpartition(".")
    if not dot:
        name, tld = domain, ""
    return f"{local[:1].lower()}***@{name[:1].lower()}***{'.' + tld.lower() if tld else ''}"


def mask_value(value: str) -> str:
    """Any other personal value: its first character and ``***``."""
    value = value.strip()
    return f"{value[:1]}***" if value else value


def mask_text(text: str | None) -> str:
    """``text`` with its email addresses, quoted values and phone-like digit runs masked."""
    if not text:
        return ""
    masked = _QUOTED.sub(lambda m: f"{m.group(1)}{mask_value(m.group(2))}{m.group(1)}", text)
    masked = _EMAIL.sub(lambda m: mask_email(m.group(0)), masked)
    return _PHONE.sub("+***", masked)


def mask_key(natural_key: str) -> str:
    """A ledger / rejection natural key: emails in it masked (``contact`` keys are emails, ``contact_tag``
    keys are ``email|tag``); store-scoped keys such as ``bigcommerce:abc|123`` stay readable."""
    return "|".join(mask_email(part) if "@" in part else part for part in natural_key.split("|"))

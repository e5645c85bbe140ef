"""What the status page shows: personal data masked in every free text, and a chart that is valid SVG
(issue 19; docs/security.md). Property-based: the masking must hold for any address and any quoted value."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ecomsync.status.chart import bar_chart
from ecomsync.status.masking import mask_email, mask_key, mask_text

emails = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._%+-]{1,20}@[a-z0-9][a-z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True)
plain = st.text(st.characters(blacklist_characters="'\"@+\n", blacklist_categories=("Cs",)), max_size=30)


@given(emails, plain, plain)
def test_no_email_address_survives_in_a_text(email, before, after):  # issue 19: personal data masked
    masked = mask_text(f"{before} {email} {after}")
    assert email not in masked and email.lower() not in masked
    assert mask_email(email) in masked


@given(st.text(st.characters(blacklist_characters="'\n", blacklist_categories=("Cs",)), min_size=1, max_size=40),
       plain, plain)
def test_a_quoted_value_keeps_only_its_first_character(value, before, after):  # crm.excluded_records.detail
    masked = mask_text(f"{before}'{value}'{after}")
    if value.strip():
        assert f"'{value.strip()[:1]}***'" in masked
    assert f"'{value}'" not in masked or not value.strip()


@given(st.from_regex(r"\+[1-9][0-9]{1,2} [0-9]{2,4} [0-9]{5,9}", fullmatch=True))
def test_phone_numbers_are_masked(phone):
    assert phone not in mask_text(f"contact phone {phone} refused")


@given(emails, st.from_regex(r"[a-z-]{1,20}", fullmatch=True))
def test_ledger_keys_keep_their_non_personal_parts(email, tag):
    assert mask_key(f"{email}|{tag}") == f"{mask_email(email)}|{tag}"
    assert mask_key(f"bigcommerce:k3x9q2m7a1|{tag}") == f"bigcommerce:k3x9q2m7a1|{tag}"


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=30, max_size=30),
       st.lists(st.integers(min_value=0, max_value=10**6), min_size=30, max_size=30))
def test_the_chart_is_valid_svg_with_one_bar_per_nonzero_count(landed, writes):
    days = [date(2026, 1, 1) + timedelta(days=n) for n in range(30)]
    series = {"records landed": dict(zip(days, landed)), "CRM writes <&>": dict(zip(days, writes))}
    svg = ET.fromstring(bar_chart(days, series))
    bars = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert len(bars) == sum(1 for n in landed + writes if n)
    assert all(float(bar.get("y")) >= 0 and float(bar.get("height")) >= 1 for bar in bars)
    assert {int(bar.get("data-count")) for bar in bars} == {n for n in landed + writes if n}

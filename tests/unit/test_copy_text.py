"""COPY text of landed payloads (P2, issue 16): the fast escaping of JSON text equals the general one."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ecomsync.warehouse import _copy_json, _copy_text, payload_json, payload_utf8

# Any JSON value, with strings full of what COPY's text format must escape (backslash, tab, newline, CR) and the
# control characters JSON itself escapes.
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\\\t\n\r\x00\x1f"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30)


@settings(max_examples=500)
@given(JSON)
def test_json_text_needs_only_its_backslashes_doubled(payload):  # P2
    text = payload_json(payload)
    assert not set(text) & {"\t", "\n", "\r"}
    assert payload_utf8(payload) == text.encode()
    assert _copy_json(payload_utf8(payload)) == _copy_text(text).encode()

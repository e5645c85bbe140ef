from __future__ import annotations

from datetime import date

import pytest

from ecomsync.config import ConfigError, load_config
from ecomsync.tasks import stores_to_sync

CONFIG = """
bigcommerce:
  stores:
    - {store_hash: aaa111, name: A, conn_id: bc_a}
    - {store_hash: bbb222, name: B, enabled: false}
square:
  locations: all
  disabled_locations: [LOFF]
crm:
  account_created_on: "2023-12-01"
"""


def test_stores_come_from_configuration_with_their_own_connection(tmp_path):  # B1
    path = tmp_path / "pipeline.yml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert [(s.store_hash, s.conn_id) for s in config.stores] == [("aaa111", "bc_a"), ("bbb222", "bigcommerce_bbb222")]
    assert config.stores[0].connection_id == "bigcommerce:aaa111"


def test_a_disabled_store_or_location_is_not_synced(tmp_path):  # B11, S9
    path = tmp_path / "pipeline.yml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert [s.store_hash for s in stores_to_sync(config)] == ["aaa111"]
    assert stores_to_sync(config, "bbb222") == []
    assert config.square.is_enabled("L1") and not config.square.is_enabled("LOFF")


def test_master_list_rule_follows_the_account_creation_date(tmp_path):  # B7
    path = tmp_path / "pipeline.yml"
    path.write_text(CONFIG)
    assert load_config(path).crm.master_list_rule_applies is False
    path.write_text(CONFIG.replace("2023-12-01", "2024-01-08"))
    assert load_config(path).crm.account_created_on == date(2024, 1, 8)
    assert load_config(path).crm.master_list_rule_applies is True


def test_bad_configuration_is_a_clear_error(tmp_path):
    path = tmp_path / "pipeline.yml"
    path.write_text("bigcommerce:\n  stores:\n    - {name: nohash}\n")
    with pytest.raises(ConfigError, match="store_hash"):
        load_config(path)
    path.write_text("bigcommerce:\n  stores:\n    - {store_hash: x}\n    - {store_hash: x}\n")
    with pytest.raises(ConfigError, match="twice"):
        load_config(path)


def test_the_shipped_configuration_loads():
    config = load_config()
    assert len(config.enabled_stores) == 2
    assert config.square.lookback_hours >= 72


# --- P6: the configuration is validated by a schema (pydantic), not hand parsing -------------------------------
import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ecomsync.config import AlertSettings, BigCommerceSettings, CrmSettings, PipelineFile, SquareSettings  # noqa: E402
from ecomsync.config import Store as StoreModel  # noqa: E402

SHIPPED = yaml.safe_load(open(__import__("ecomsync.config", fromlist=["DEFAULT_CONFIG"]).DEFAULT_CONFIG))

# (path to a mapping inside the shipped file, the model that validates it)
SECTIONS = [(("bigcommerce",), BigCommerceSettings), (("bigcommerce", "stores", 0), StoreModel),
            (("square",), SquareSettings), (("crm",), CrmSettings), ((), None)]


def _at(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def _dotted(path, key):
    text = ""
    for part in (*path, key):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _write(tmp_path, doc) -> str:
    path = tmp_path / "pipeline.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@settings(max_examples=60, deadline=None)
@given(section=st.sampled_from(SECTIONS),
       key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_are_refused_naming_file_and_key(tmp_path_factory, section, key):  # P6
    path, model = section
    known = {f.name for f in __import__("dataclasses").fields(model or PipelineFile)}
    if key in known:
        return
    doc = __import__("copy").deepcopy(SHIPPED)
    _at(doc, path)[key] = False
    file = _write(tmp_path_factory.mktemp("cfg"), doc)
    with pytest.raises(ConfigError) as excinfo:
        load_config(file)
    assert file in str(excinfo.value) and f"{_dotted(path, key)}: unknown key" in str(excinfo.value)


def test_a_misspelt_enabled_is_refused_not_ignored(tmp_path):  # P6, B11
    doc = __import__("copy").deepcopy(SHIPPED)
    doc["bigcommerce"]["stores"][1].pop("enabled")
    doc["bigcommerce"]["stores"][1]["enabeld"] = False
    file = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match=r"bigcommerce\.stores\[1\]\.enabeld: unknown key"):
        load_config(file)


# every typed scalar of the schema, with a value of the wrong type a person could plausibly write
WRONG_TYPES = [
    (("bigcommerce", "stores", 0, "enabled"), "false", "a boolean"),
    (("bigcommerce", "stores", 0, "enabled"), "no", "a boolean"),
    (("bigcommerce", "stores", 0, "enabled"), 0, "a boolean"),
    (("bigcommerce", "lookback_minutes"), "10", "an integer"),
    (("bigcommerce", "lookback_minutes"), 1.5, "an integer"),
    (("square", "lookback_hours"), "72h", "an integer"),
    (("crm", "requests_per_second"), "five", "a number"),
    (("crm", "requests_per_second"), True, "a number"),
    (("crm", "bulk_import_threshold"), "100", "an integer"),
    (("crm", "account_created_on"), "01.03.2024", "a date"),
    (("square", "historical_start"), "yesterday", "an ISO-8601 timestamp"),
    (("square", "locations"), "some", "one of the allowed values"),
]


@pytest.mark.parametrize("path,value,expected", WRONG_TYPES, ids=[".".join(map(str, p)) + f"={v!r}"
                                                                  for p, v, _ in WRONG_TYPES])
def test_wrong_types_are_refused_not_coerced(tmp_path, path, value, expected):  # P6
    doc = __import__("copy").deepcopy(SHIPPED)
    _at(doc, path[:-1])[path[-1]] = value
    file = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as excinfo:
        load_config(file)
    message = str(excinfo.value)
    assert file in message and _dotted(path[:-1], path[-1]) in message and f"expected {expected}" in message


def test_alerts_are_part_of_the_schema(tmp_path):  # P6
    doc = {**SHIPPED, "alerts": {"webhook_conn_id": "ops_webhook", "email": ["Oncall@Example.com"],
                                 "crm_load_deadline_hours": 6}}
    alerts = load_config(_write(tmp_path, doc)).alerts
    assert alerts == AlertSettings(webhook_conn_id="ops_webhook", email=["Oncall@Example.com"],
                                   crm_load_deadline_hours=6)
    doc["alerts"]["email"] = ["not-an-address"]
    with pytest.raises(ConfigError, match=r"alerts\.email\[0\]"):
        load_config(_write(tmp_path, doc))

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

"""The pipeline's configuration: one YAML file, no secrets.

``ECOMSYNC_CONFIG`` points at another file; the default is ``config/pipeline.yml``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "pipeline.yml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Store:
    store_hash: str
    name: str
    conn_id: str
    link_url: str = ""
    enabled: bool = True

    @property
    def connection_id(self) -> str:
        return f"bigcommerce:{self.store_hash}"


@dataclass(frozen=True)
class SquareSettings:
    conn_id: str
    lookback_hours: int
    historical_start: datetime
    locations: list[dict[str, Any]] | None  # None = discover all active locations
    disabled_locations: frozenset[str]
    schedule: str

    def location_conn_id(self, location_id: str) -> str:
        for entry in self.locations or []:
            if entry["location_id"] == location_id:
                return entry.get("conn_id", self.conn_id)
        return self.conn_id

    def is_enabled(self, location_id: str) -> bool:
        if location_id in self.disabled_locations:
            return False
        for entry in self.locations or []:
            if entry["location_id"] == location_id:
                return bool(entry.get("enabled", True))
        return self.locations is None


@dataclass(frozen=True)
class CrmSettings:
    conn_id: str
    requests_per_second: float
    account_created_on: date
    master_list_cutoff: date
    master_list_name: str
    bigcommerce_tag: str
    square_tag: str
    bulk_import_threshold: int
    realtime_window_hours: int

    @property
    def master_list_rule_applies(self) -> bool:
        """B7: accounts created on/after the cutoff add opted-in contacts to the master list."""
        return self.account_created_on >= self.master_list_cutoff


@dataclass(frozen=True)
class PipelineConfig:
    stores: list[Store]
    bigcommerce_schedule: str
    bigcommerce_lookback_minutes: int
    square: SquareSettings
    crm: CrmSettings
    dbt_vars: dict[str, Any] = field(default_factory=dict)
    # webhooks.receiver_url: the receiver's public base URL (…/ecomsync/webhooks); None = no webhooks (issue 17)
    webhook_receiver_url: str | None = None

    @property
    def enabled_stores(self) -> list[Store]:
        return [s for s in self.stores if s.enabled]

    def store(self, store_hash: str) -> Store:
        for store in self.stores:
            if store.store_hash == store_hash:
                return store
        raise ConfigError(f"store {store_hash!r} is not in the configuration")


def _date(value: Any, key: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a date (YYYY-MM-DD)") from exc


def _timestamp(value: Any, key: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{key}: {value!r} is not an ISO-8601 timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    path = Path(path or os.environ.get("ECOMSYNC_CONFIG") or DEFAULT_CONFIG)
    raw = yaml.safe_load(path.read_text()) or {}
    bc = raw.get("bigcommerce") or {}
    stores = []
    for entry in bc.get("stores") or []:
        if "store_hash" not in entry:
            raise ConfigError(f"{path}: every store needs a store_hash: {entry!r}")
        store_hash = str(entry["store_hash"])
        stores.append(Store(store_hash=store_hash, name=str(entry.get("name") or store_hash),
                            conn_id=str(entry.get("conn_id") or f"bigcommerce_{store_hash}"),
                            link_url=str(entry.get("link_url") or ""), enabled=bool(entry.get("enabled", True))))
    if len({s.store_hash for s in stores}) != len(stores):
        raise ConfigError(f"{path}: a store_hash is listed twice")
    sq = raw.get("square") or {}
    locations = sq.get("locations", "all")
    if locations != "all" and not isinstance(locations, list):
        raise ConfigError(f"{path}: square.locations must be 'all' or a list")
    square = SquareSettings(
        conn_id=str(sq.get("conn_id", "square_default")),
        lookback_hours=int(sq.get("lookback_hours", 72)),
        historical_start=_timestamp(sq.get("historical_start", "2000-01-01T00:00:00Z"), "square.historical_start"),
        locations=None if locations == "all" else [dict(x) for x in locations],
        disabled_locations=frozenset(sq.get("disabled_locations") or []),
        schedule=str(sq.get("schedule", "*/30 * * * *")),
    )
    crm = raw.get("crm") or {}
    crm_settings = CrmSettings(
        conn_id=str(crm.get("conn_id", "activecampaign_default")),
        requests_per_second=float(crm.get("requests_per_second", 5)),
        account_created_on=_date(crm.get("account_created_on", "2024-01-08"), "crm.account_created_on"),
        master_list_cutoff=_date(crm.get("master_list_cutoff", "2024-01-08"), "crm.master_list_cutoff"),
        master_list_name=str(crm.get("master_list_name", "Master Contact List")),
        bigcommerce_tag=str(crm.get("bigcommerce_tag", "bigcommerce-customer")),
        square_tag=str(crm.get("square_tag", "square-customer")),
        bulk_import_threshold=int(crm.get("bulk_import_threshold", 100)),
        realtime_window_hours=int(crm.get("realtime_window_hours", 24)),
    )
    return PipelineConfig(stores=stores, bigcommerce_schedule=str(bc.get("schedule", "*/15 * * * *")),
                          bigcommerce_lookback_minutes=int(bc.get("lookback_minutes", 10)),
                          square=square, crm=crm_settings, dbt_vars=dict(raw.get("dbt") or {}),
                          webhook_receiver_url=(raw.get("webhooks") or {}).get("receiver_url") or None)

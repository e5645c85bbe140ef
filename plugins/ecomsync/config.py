"""The pipeline's configuration: one YAML file, no secrets, validated by a pydantic schema (P6).

``ECOMSYNC_CONFIG`` points at another file; the default is ``config/pipeline.yml``.

Every section refuses keys it does not know (``enabeld``) and values of the wrong type
(``enabled: "false"``, ``requests_per_second: five``) instead of coercing them: a
``ConfigError`` names the file, the key path and the expected type. The DAG files load
the configuration at parse time, so a bad file shows as an import error saying exactly that.
"""
from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "pipeline.yml"


class ConfigError(ValueError):
    pass


def _id_text(value: Any) -> Any:
    # Store hashes and location ids are text; YAML reads an all-digit hash as an int.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IdText = Annotated[str, BeforeValidator(_id_text), Field(min_length=1)]
PositiveInt = Annotated[StrictInt, Field(ge=0)]


# Unknown keys are refused; strings are never turned into booleans or numbers. Pydantic dataclasses:
# validated like models, and still plain dataclasses (dataclasses.replace / asdict work on them).
# (Strictness is per field — StrictBool, StrictInt, StrictFloat — so nested sections still come from mappings.)
_SECTION = ConfigDict(extra="forbid")
section = dataclass(config=_SECTION, frozen=True)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@section
class Store:
    store_hash: IdText
    name: str = ""
    conn_id: str = ""
    link_url: str = ""
    enabled: StrictBool = True

    @model_validator(mode="after")
    def _defaults(self) -> Store:
        if not self.name:
            object.__setattr__(self, "name", self.store_hash)
        if not self.conn_id:
            object.__setattr__(self, "conn_id", f"bigcommerce_{self.store_hash}")
        return self

    @property
    def connection_id(self) -> str:
        return f"bigcommerce:{self.store_hash}"


@section
class SquareLocation:
    location_id: IdText
    name: str = ""
    conn_id: str | None = None
    enabled: StrictBool = True


@section
class BigCommerceSettings:
    schedule: str = "*/15 * * * *"
    lookback_minutes: PositiveInt = 10
    stores: list[Store] = Field(default_factory=list)

    @field_validator("stores")
    @classmethod
    def _unique(cls, stores: list[Store]) -> list[Store]:
        seen: set[str] = set()
        for store in stores:
            if store.store_hash in seen:
                raise ValueError(f"store_hash {store.store_hash!r} is listed twice")
            seen.add(store.store_hash)
        return stores


@section
class SquareSettings:
    schedule: str = "*/30 * * * *"
    conn_id: str = "square_default"
    lookback_hours: PositiveInt = 72
    historical_start: Annotated[datetime, Field(strict=False)] = datetime(2000, 1, 1, tzinfo=UTC)
    # "all" = discover every active location; or the list of locations to sync.
    locations: Literal["all"] | list[SquareLocation] = "all"
    disabled_locations: frozenset[IdText] = Field(default_factory=frozenset, strict=False)
    # Location.status INACTIVE: "history" (sync once, then skip), "include" (every run) or "skip" (never, reported).
    inactive_locations: Literal["history", "include", "skip"] = "history"

    @field_validator("historical_start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _utc(value)

    @property
    def listed_locations(self) -> list[SquareLocation]:
        return [] if self.locations == "all" else list(self.locations)

    def location_conn_id(self, location_id: str) -> str:
        for entry in self.listed_locations:
            if entry.location_id == location_id:
                return entry.conn_id or self.conn_id
        return self.conn_id

    def is_enabled(self, location_id: str) -> bool:
        if location_id in self.disabled_locations:
            return False
        for entry in self.listed_locations:
            if entry.location_id == location_id:
                return entry.enabled
        return self.locations == "all"


LooseDate = Annotated[date, Field(strict=False)]


@section
class CrmSettings:
    conn_id: str = "activecampaign_default"
    requests_per_second: Annotated[float, Field(gt=0, strict=True)] = 5.0
    account_created_on: LooseDate = date(2024, 1, 8)
    master_list_cutoff: LooseDate = date(2024, 1, 8)
    master_list_name: str = "Master Contact List"
    bigcommerce_tag: str = "bigcommerce-customer"
    square_tag: str = "square-customer"
    bulk_import_threshold: PositiveInt = 100
    realtime_window_hours: PositiveInt = 24

    @property
    def master_list_rule_applies(self) -> bool:
        """B7: accounts created on/after the cutoff add opted-in contacts to the master list."""
        return self.account_created_on >= self.master_list_cutoff


@section
class AlertSettings:
    """Who hears about failures: e-mail (smtp provider) and/or a webhook whose URL lives in a connection."""

    email: list[EmailStr] = Field(default_factory=list)
    email_conn_id: str = "smtp_default"
    webhook_conn_id: str | None = None
    crm_load_deadline_hours: Annotated[StrictInt, Field(gt=0)] | None = None


@section
class WebhookSettings:
    """Webhooks (issue 17): the receiver's public base URL on the Airflow API server; None = no webhooks."""

    receiver_url: str | None = None


@section
class PipelineFile:
    """The shape of ``pipeline.yml``: one section per system."""

    bigcommerce: BigCommerceSettings = Field(default_factory=BigCommerceSettings)
    square: SquareSettings = Field(default_factory=SquareSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    dbt: dict[str, Any] = Field(default_factory=dict)


@section
class PipelineConfig:
    """What the tasks use: the validated file, flattened for the BigCommerce settings."""

    stores: list[Store]
    bigcommerce_schedule: str
    bigcommerce_lookback_minutes: PositiveInt
    square: SquareSettings
    crm: CrmSettings
    dbt_vars: dict[str, Any] = Field(default_factory=dict)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    # webhooks.receiver_url: the receiver's public base URL (…/ecomsync/webhooks); None = no webhooks (issue 17)
    webhook_receiver_url: str | None = None

    @property
    def enabled_stores(self) -> list[Store]:
        return [s for s in self.stores if s.enabled]

    def store(self, store_hash: str) -> Store:
        for store in self.stores:
            if store.store_hash == store_hash:
                return store
        known = ", ".join(s.store_hash for s in self.stores) or "none"
        raise ConfigError(f"store {store_hash!r} is not in the configuration (bigcommerce.stores; known: {known})")


_ADAPTER = TypeAdapter(PipelineFile)

_EXPECTED = {
    "bool_type": "a boolean (true or false, unquoted)",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_type": "a date (YYYY-MM-DD)",
    "datetime_parsing": "an ISO-8601 timestamp",
    "datetime_from_date_parsing": "an ISO-8601 timestamp",
    "literal_error": "one of the allowed values",
    "missing": "a value (the key is required)",
}


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("list[SquareLocation]", "literal['all']", "constrained-int", "function-after[_defaults()]"):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def describe_errors(path: Path, error: ValidationError) -> str:
    """One line per problem: file, key path, what was expected and what was found."""
    lines = []
    for item in error.errors():
        key = _key_path(item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"{path}: {key}: unknown key (misspelt? it is not part of the configuration schema)")
            continue
        if item["type"] == "value_error":
            lines.append(f"{path}: {key}: {item['msg'].removeprefix('Value error, ')}")
            continue
        expected = _EXPECTED.get(item["type"], item["msg"])
        lines.append(f"{path}: {key}: expected {expected}, got {item.get('input')!r} ({item['msg']})")
    return "invalid pipeline configuration:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read and validate ``pipeline.yml``; raises ``ConfigError`` naming the file and every bad key."""
    path = Path(path or os.environ.get("ECOMSYNC_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the pipeline configuration: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the pipeline configuration must be a mapping of sections")
    try:
        parsed = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(path, exc)) from None
    return PipelineConfig(stores=list(parsed.bigcommerce.stores), bigcommerce_schedule=parsed.bigcommerce.schedule,
                          bigcommerce_lookback_minutes=parsed.bigcommerce.lookback_minutes, square=parsed.square,
                          crm=parsed.crm, dbt_vars=dict(parsed.dbt), alerts=parsed.alerts,
                          webhook_receiver_url=parsed.webhooks.receiver_url)

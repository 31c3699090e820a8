"""Station configuration: one TOML file, checked in full before anything starts.

The station refuses to start without an operator ID and a facility approval reference (triage facilities are
approved under the SSC guidance); both go on every record it writes. Relative paths resolve against the config
file's folder, so a config and its files move together.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from firmware_catalog.errors import format_validation_error
from station.identifier import Label, Name
from station.listen_address import parse_listen
from station.outcome import Outcome

if TYPE_CHECKING:
    from station.store import Store

__all__ = [
    "CatalogConfig",
    "ConfigError",
    "FleetConfig",
    "MetricsConfig",
    "MqttConfig",
    "SlotConfig",
    "StationConfig",
    "StationSection",
    "Tariff",
    "WebConfig",
    "load_config",
]

Region = Literal["North", "Central", "South"]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file, line if known, and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationSection(_Section):
    id: Name = Field(description="The station's ID: a name (docs/station.md, Identifiers); a topic level")
    region: Region
    operator: Label = Field(description="The signed-in operator's ID; goes on every record")
    facility_approval: Label = Field(description="The triage facility's SSC approval reference")
    store: Path = Path("state/station.db")
    key: Path | None = Field(default=None, description="Station signing key (PKCS#8 PEM) for audit checkpoints")
    checkpoint_every: int = Field(default=100, ge=1)
    require_scan_in: bool = Field(
        default=True,
        description="Flash a hub only once it was scanned in (`orders receive`) to the order that names it",
    )


class CatalogConfig(_Section):
    folder: Path
    authority_key: Path


class Tariff(_Section):
    """Charge per hub by outcome, in the currency's major unit as a decimal string (`"9.80"`)."""

    currency: str = "GBP"
    REFLASHED: Decimal = Decimal("9.80")
    ALREADY_CURRENT: Decimal = Decimal("0")
    REFUSED: Decimal = Decimal("0")
    FAILED: Decimal = Decimal("0")
    QUARANTINED: Decimal = Decimal("0")
    SCRAP: Decimal = Decimal("0")
    UNEXPECTED: Decimal = Decimal("0")

    @field_validator("*", mode="after")
    @classmethod
    def _not_negative(cls, value: Any) -> Any:
        if isinstance(value, Decimal) and value < 0:
            raise ValueError("a charge cannot be negative")
        return value

    def pence(self, outcome: Outcome) -> int:
        amount: Decimal = getattr(self, outcome.value)
        return int((amount * 100).to_integral_value())


# One charge per outcome: an outcome added to station/outcome.py without its charge here fails at import, not on a bill.
if set(Tariff.model_fields) - {"currency"} != {outcome.value for outcome in Outcome}:
    raise TypeError("Tariff must have exactly one charge per Outcome")


def _mqtt_url(url: str) -> str:
    if not url.startswith(("mqtt://", "mqtts://")):
        raise ValueError(f"must start with mqtt:// or mqtts://, got {url!r}")
    return url


class MqttConfig(_Section):
    """The broker the reporter publishes to. Secrets never live here: the password comes from the environment
    variable `password_env` or from `password_file`."""

    url: NonBlank = Field(description="mqtt://host:port, or mqtts://host:port for TLS")
    username: str | None = None
    password_env: str = "REFLASH_MQTT_PASSWORD"  # noqa: S105 -- the name of a variable, not a password
    password_file: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    republish_after_s: float = Field(default=30.0, gt=0, description="First retry of an unacked or refused row")
    republish_max_s: float = Field(default=600.0, gt=0, description="Cap of the per-message exponential backoff")
    max_in_flight: int = Field(default=100, ge=1, le=10_000)
    session_expiry_s: int = Field(default=14 * 24 * 3600, ge=0)

    _scheme = field_validator("url")(_mqtt_url)


class MetricsConfig(_Section):
    """`[metrics]`: Prometheus metrics served by the station itself (docs/operations.md). Off unless `listen` is set;
    the metrics are not authenticated, so the station refuses to start with an address that is not loopback."""

    listen: NonBlank | None = Field(default=None, description="host:port, e.g. 127.0.0.1:9464")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is not None:
            parse_listen(listen)
        return listen


class JobSettings(_Section):
    """How patient a job is with a hub (docs/station.md).

    Each phase of a flash (transfer; verify and proof; activation and read-back) has a deadline: `deadline_factor`
    times what a healthy hub needs at the line's rate (the driver's `timing()`; for the maintenance port,
    `drivers.maintenance_port.LinkTiming`: line time of the image and of every exchange, a round trip per exchange,
    the hub's hashing), plus `deadline_slack_s`, plus the waits the settings themselves configure (retry backoffs;
    the activation timeout and read-back interval)."""

    link_retries: int = Field(default=5, ge=0, le=100)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    readback_tries: int = Field(default=10, ge=1)
    readback_interval_s: float = Field(default=0.5, ge=0)
    max_steps: int = Field(default=4, ge=1, le=16)
    deadline_factor: float = Field(default=3.0, ge=1.0, le=100.0)
    deadline_slack_s: float = Field(default=30.0, ge=0)


class WebConfig(_Section):
    """The bench page and its API (docs/bench-page.md), served by `reflash run`. An address other than loopback
    needs `tls_cert` and `tls_key`, or the station refuses to start."""

    enabled: bool = True
    listen: NonBlank = Field(default="127.0.0.1:8080", description="HOST:PORT (port 0: any free port)")
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain: the page is served over HTTPS")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class FleetConfig(_Section):
    """`[fleet]`: the broker the bench page's fleet view (/fleet) reads every station's retained status and heartbeat
    from (docs/station.md, "The fleet view"). A station's own MQTT account may read only its own topics, so this is
    an account that may read them all (the ACL's `dashboard`); its password comes from `password_env`."""

    broker: NonBlank = Field(description="mqtt://host:port, or mqtts://host:port for TLS")
    username: str | None = None
    password_env: str = "REFLASH_FLEET_PASSWORD"  # noqa: S105 -- the name of a variable, not a password
    ca: Path | None = None

    _scheme = field_validator("broker")(_mqtt_url)


class SlotConfig(_Section):
    name: Name
    driver: NonBlank
    url: NonBlank
    options: dict[str, Any] = Field(default_factory=dict)


class StationConfig(_Section):
    station: StationSection
    catalog: CatalogConfig
    tariff: Tariff = Tariff()
    mqtt: MqttConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    job: JobSettings = JobSettings()
    web: WebConfig = WebConfig()
    fleet: FleetConfig | None = None
    slots: tuple[SlotConfig, ...] = ()
    source: Path = Path("station.toml")

    @field_validator("slots")
    @classmethod
    def _unique_slots(cls, slots: tuple[SlotConfig, ...]) -> tuple[SlotConfig, ...]:
        names = [slot.name for slot in slots]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"slot names must be unique; repeated: {', '.join(duplicates)}")
        return slots

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.source.parent / path

    def open_store(self) -> Store:
        """The station's store as this configuration says: its file, its actor, its checkpoint key and interval.
        (Here, not in the store: the store knows nothing of configuration.)"""
        from firmware_catalog.keys import load_private_key
        from station.messages import audit_checkpoint
        from station.store import Actor, Store

        section = self.station
        key = load_private_key(self.resolve(section.key)) if section.key is not None else None
        store = Store(
            self.resolve(section.store),
            Actor(section.id, section.operator, section.facility_approval),
            key=key,
            checkpoint_every=section.checkpoint_every,
        )
        # Every checkpoint signed, by the daemon or a one-shot command, is queued for the DSP as an anchor.
        store.anchor_checkpoints(partial(audit_checkpoint, region=section.region))
        return store


def load_config(path: str | Path) -> StationConfig:
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the TOML.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}, byte {exc.start}: not UTF-8 text") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return StationConfig.model_validate({**data, "source": path})
    except ValidationError as exc:
        where, message = format_validation_error(exc)
        raise ConfigError(f"{path}: {where}: {message}") from exc

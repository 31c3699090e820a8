"""The MQTT contract between a station and the DSP update bridge: topics and message models.

These pydantic models are the single source of the contract: docs/schemas/*.schema.json and docs/asyncapi.yaml are
generated from them (`python -m station.asyncapi docs`), and a test fails when the committed files differ. String
formats are expressed as patterns so that the JSON Schemas carry them too: the DSP side validates against the
schemas, not against this code.

Topic tree, under a versioned root (`reflash/v1`), then the CSP region, then the station:

    reflash/v1/{region}/{station}/status              StationStatus   QoS 1, retained  (birth, will, shutdown)
    reflash/v1/{region}/{station}/result              HubResult       QoS 1            (one per finished job)
    reflash/v1/{region}/{station}/order/{order_ref}   OrderSummary    QoS 1, retained  (on order close)
    reflash/v1/{region}/{station}/slot/{slot}         SlotProgress    QoS 0            (telemetry, optional)
    reflash/v1/{region}/{station}/ack                 DspAck          QoS 1            (published by the bridge)
    reflash/v1/{region}/{station}/checkpoint          AuditCheckpoint QoS 1            (1.2: each signed checkpoint)
    reflash/v1/{region}/{station}/heartbeat           StationHeartbeat QoS 1, retained (1.2: the station's figures)
    reflash/v1/STATE/{bridge}                         BridgeStatus    QoS 1, retained  (bridge birth and will)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from station.identifier import topic_level
from station.outcome import Outcome

if TYPE_CHECKING:
    from station.audit import Checkpoint
    from station.store import JobRecord

__all__ = [
    "CHANNELS",
    "CONTRACT_VERSION",
    "RESEND_MAX",
    "ROOT",
    "AuditCheckpoint",
    "BridgeStatus",
    "Channel",
    "DspAck",
    "HubResult",
    "OrderSummary",
    "OrderTotals",
    "ResendRequest",
    "SlotProgress",
    "StationHeartbeat",
    "StationStatus",
    "audit_checkpoint",
    "hub_result",
    "order_summary",
    "topic",
]

ROOT = "reflash/v1"
# The contract's version: the topic root carries the major version, each payload's `schema` field major.minor. A
# message type keeps the version in which its schema last changed (1.2 only added types), so that a consumer of an
# older minor still reads every message it already knew (docs/mqtt-api.md, "Versions").
CONTRACT_VERSION = "1.2"

Region = Literal["North", "Central", "South"]
Hex4 = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{4}$")]
Hex8 = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{8}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{2}(-[0-9A-F]{2}){7}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/#+\s]+$")]
# A UUID as RFC 9562 writes it: lower-case hex with hyphens (what the JSON Schema `uuid` format accepts too).
MessageId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
# A time as the station's store writes and signs it (UTC, `Z`), kept as text: a signature covers these very characters,
# which a date-time parsed and written again need not reproduce.
SignedTime = Annotated[
    str,
    StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"),
    Field(json_schema_extra={"format": "date-time"}),
]
Signature = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]


class _Message(BaseModel):
    # Serialization-mode schemas mark defaulted fields required: every message the station sends carries them.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class HubResult(_Message):
    """What happened to one hub: the DSP applies `firmware_after` to the CHF and GPF rows of the SMI."""

    schema_: Literal["reflash.hub-result/1.1"] = Field("reflash.hub-result/1.1", alias="schema")
    message_id: UUID = Field(description="Idempotency key: the bridge applies each message_id once")
    sequence: int = Field(
        ge=1,
        description="The station's result counter: 1, 2, 3... in the order results were recorded, never reused, so "
        "that a DSP can see a gap. Republished messages keep their number; arrival order is not guaranteed",
    )
    station: Name
    region: Region
    order_ref: str | None = Field(description="The re-flash order, or null for a hub no open order names")
    requesting_party: str | None = Field(description="The DCC User that requested the order; null for stock")
    chf_id: DeviceId = Field(description="Communications Hub Function device ID (EUI-64)")
    gpf_id: DeviceId = Field(description="Gas Proxy Function device ID (EUI-64)")
    manufacturer: Hex4
    model: Hex4
    hardware_version: Hex4
    firmware_before: Hex8
    firmware_after: Hex8 | None = Field(
        description="The version the hub runs, read from it as the job ended: the SMI applies it whatever the "
        "outcome. Null when the station could not read the hub or cannot trust its answer: the SMI keeps its row"
    )
    image_sha256: Sha256 | None = Field(description="Manufacturer Image SHA-256 of the image flashed, if any")
    outcome: Outcome
    reason: str = Field(min_length=1, description="Stable reason code (docs/policy.md, docs/maintenance-port.md)")
    attempts: int = Field(ge=0)
    started_at: AwareDatetime
    finished_at: AwareDatetime
    operator: str = Field(min_length=1)
    facility: str = Field(min_length=1, description="The triage facility's SSC approval reference")
    audit_hash: Sha256 = Field(description="SHA-256 of the station's audit entry that records this result")


class StationStatus(_Message):
    """Birth (`online`, on every connect) and death (`offline`, as the MQTT will and before a clean shutdown)."""

    schema_: Literal["reflash.station-status/1.1"] = Field("reflash.station-status/1.1", alias="schema")
    state: Literal["online", "offline"]
    station: Name
    region: Region
    session: int = Field(
        ge=0, description="Increases on every connect; ties a will to the birth it follows. Order status by session"
    )
    at: AwareDatetime | None = Field(
        description="When the station published this message. Null in the will: the broker publishes the will "
        "when the connection dies, a time the station cannot know when it writes it"
    )
    software_version: str
    facility: str
    operator: str | None = None
    slots: int = Field(ge=0)
    catalog_serial: int | None = None


class OrderTotals(_Message):
    named: int = Field(ge=0)
    processed: int = Field(ge=0)
    outcomes: dict[str, int]
    charge: str = Field(pattern=r"^\d+\.\d{2}$")
    currency: str | None


class OrderSummary(_Message):
    """Published (retained) when an order is closed."""

    schema_: Literal["reflash.order-summary/1.1"] = Field("reflash.order-summary/1.1", alias="schema")
    message_id: UUID
    station: Name
    region: Region
    order_ref: str
    kind: Literal["dcc", "stock"]
    requesting_party: str | None
    closed_at: AwareDatetime
    totals: OrderTotals
    never_received: list[DeviceId]
    unasked: list[DeviceId]


class SlotProgress(_Message):
    """Telemetry, QoS 0: lossy by design; the result message is what counts."""

    schema_: Literal["reflash.slot-progress/1.1"] = Field("reflash.slot-progress/1.1", alias="schema")
    station: Name
    slot: Name
    state: str
    chf_id: DeviceId | None
    bytes_done: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    bytes_per_s: float = Field(ge=0)
    at: AwareDatetime


# The most results one resend request may ask for: a DSP that lost more asks in several requests.
RESEND_MAX = 10_000


class DspAck(_Message):
    """The bridge's answer to one HubResult: `applied`, `duplicate` (already applied), or `rejected` with reason."""

    schema_: Literal["reflash.dsp-ack/1.1"] = Field("reflash.dsp-ack/1.1", alias="schema")
    message_id: MessageId = Field(description="The message_id of the HubResult acknowledged")
    result: Literal["applied", "duplicate", "rejected"]
    reason: str | None = Field(description="Why a message was rejected; null otherwise")
    bridge: str
    at: AwareDatetime = Field(description="When the bridge sent the ack")


class ResendRequest(_Message):
    """A DSP's request to a station: publish the HubResults with these sequence numbers again (it found a gap in
    `sequence`, or lost what it had applied). The station re-queues every result in the range it holds; the bridge
    applies each message_id once, so a result it already has is acked `duplicate`."""

    schema_: Literal["reflash.resend-request/1.1"] = Field("reflash.resend-request/1.1", alias="schema")
    from_sequence: int = Field(ge=1, description="The first result sequence number to publish again")
    to_sequence: int = Field(ge=1, description="The last, inclusive; at most 10,000 after from_sequence")
    bridge: str = Field(min_length=1, description="Who asks (recorded in the station's audit trail)")
    at: AwareDatetime = Field(description="When the request was sent")

    @model_validator(mode="after")
    def _a_range(self) -> ResendRequest:
        if not self.from_sequence <= self.to_sequence < self.from_sequence + RESEND_MAX:
            raise ValueError(f"to_sequence must be from_sequence .. from_sequence + {RESEND_MAX - 1}")
        return self


class BridgeStatus(_Message):
    """A DSP bridge's presence (Sparkplug host STATE): `online` on connect, `offline` as its will and on stop."""

    schema_: Literal["reflash.bridge-status/1.1"] = Field("reflash.bridge-status/1.1", alias="schema")
    state: Literal["online", "offline"]
    bridge: Name
    group: Name = Field(description="The shared-subscription group the bridge reads results in")
    session: int = Field(ge=0, description="Increases on every connect; order a bridge's statuses by session")
    at: AwareDatetime | None = Field(description="When the bridge published it; null in the will")


class AuditCheckpoint(_Message):
    """A signed checkpoint of the station's audit chain, held by the DSP as an anchor the station cannot reach."""

    schema_: Literal["reflash.audit-checkpoint/1.2"] = Field("reflash.audit-checkpoint/1.2", alias="schema")
    message_id: UUID = Field(description="Idempotency key: the bridge stores and acks each message_id once")
    station: Name
    region: Region
    seq: int = Field(ge=1, description="The sequence number of the audit entry the checkpoint closes")
    hash: Sha256 = Field(description="That entry's hash: the head of the station's hash chain at `seq`")
    at: SignedTime = Field(description="When the station signed it, exactly as signed (UTC, `Z`)")
    key_fingerprint: Sha256 = Field(description="SHA-256 of the signing key's DER SubjectPublicKeyInfo")
    signature: Signature = Field(
        description="ECDSA P-256 over SHA-256, raw r||s in hex, of the canonical JSON of {at, hash, kind: "
        "audit-checkpoint, seq, station} (keys sorted, no spaces, UTF-8; docs/station.md, The audit trail)"
    )


class StationHeartbeat(_Message):
    """A station's working figures, retained: slots busy, hubs done today by outcome, outbox backlog, catalog."""

    schema_: Literal["reflash.station-heartbeat/1.2"] = Field("reflash.station-heartbeat/1.2", alias="schema")
    station: Name
    region: Region
    session: int = Field(ge=0, description="The session of the birth (StationStatus) this heartbeat follows")
    at: AwareDatetime = Field(description="When the station published it: the fleet's `last seen`")
    slots: int = Field(ge=0)
    slots_busy: int = Field(ge=0, description="Slots working on a hub: deciding, transferring, verifying, activating")
    day: date = Field(description="The UTC day `hubs_today` counts")
    hubs_today: dict[Outcome, int] = Field(description="Hubs finished on `day` (UTC), by outcome")
    outbox_backlog: int = Field(ge=0, description="Results and order summaries not yet confirmed")
    anchors_waiting: int = Field(ge=0, description="Signed audit checkpoints the DSP has not acknowledged yet")
    catalog_serial: int | None = Field(description="The serial of the catalog in force (after any reload)")


@dataclass(frozen=True)
class Channel:
    name: str
    address: str  # with {region}, {station} and other parameters
    model: type[_Message]
    qos: int
    retain: bool
    publisher: str
    description: str
    expiry_s: int | None = None  # MQTT v5 message expiry, for messages worthless once stale


CHANNELS: tuple[Channel, ...] = (
    Channel("status", "{region}/{station}/status", StationStatus, 1, True, "station",
            "Birth on connect, will and explicit offline on shutdown. Retained: the last state is always there."),
    Channel("result", "{region}/{station}/result", HubResult, 1, False, "station",
            "One per finished job, from the outbox; republished until the bridge acks it."),
    Channel("order", "{region}/{station}/order/{order_ref}", OrderSummary, 1, True, "station",
            "The reconciliation totals of an order, on close."),
    Channel("slot", "{region}/{station}/slot/{slot}", SlotProgress, 0, False, "station",
            "Slot progress telemetry, on change; may be lost; expires after 30 s.", expiry_s=30),
    Channel("ack", "{region}/{station}/ack", DspAck, 1, False, "dsp-bridge",
            "The bridge's acknowledgement of each HubResult, on the result's response topic."),
    Channel("resend", "{region}/{station}/resend", ResendRequest, 1, False, "dsp-bridge",
            "A DSP asks the station to publish a range of its results again (by sequence)."),
    Channel("bridge_status", "STATE/{bridge}", BridgeStatus, 1, True, "dsp-bridge",
            "Bridge presence: online on connect, offline as its will and on stop. Stations hold republishing "
            "while no bridge is online."),
    Channel("checkpoint", "{region}/{station}/checkpoint", AuditCheckpoint, 1, False, "station",
            "Each signed audit checkpoint, from the outbox; republished until the bridge acks it (1.2)."),
    Channel("heartbeat", "{region}/{station}/heartbeat", StationHeartbeat, 1, True, "station",
            "The station's figures, on connect, every 30 s and at stop; retained for the fleet view (1.2)."),
)  # fmt: skip


def topic(channel: str, **parameters: str) -> str:
    """The full topic of a channel, e.g. topic("result", region="North", station="st-1"). Each parameter is one
    topic level, percent-encoded where it holds anything outside `A-Z a-z 0-9 . _ - ~` (an order reference with a
    `/` or `#`), so that no value can add a level or a wildcard."""
    found = next(c for c in CHANNELS if c.name == channel)
    return f"{ROOT}/{found.address.format(**{k: topic_level(v) for k, v in parameters.items()})}"


def hub_result(
    job: JobRecord, audit_hash: str, message_id: str, *, station: str, region: str, requesting_party: str | None
) -> dict[str, Any]:
    """The HubResult payload for a finished job, checked against the model before it enters the outbox."""
    message = HubResult.model_validate(
        {
            "schema": "reflash.hub-result/1.1",
            "message_id": message_id,
            "sequence": job.result_sequence,
            "station": station,
            "region": region,
            "order_ref": job.order_ref,
            "requesting_party": requesting_party,
            "chf_id": job.chf_id,
            "gpf_id": job.gpf_id,
            "manufacturer": job.manufacturer,
            "model": job.model,
            "hardware_version": job.hardware_version,
            "firmware_before": job.firmware_before,
            "firmware_after": job.firmware_after,
            "image_sha256": job.image_sha256,
            "outcome": job.outcome,
            "reason": job.reason,
            "attempts": job.attempts,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "operator": job.operator,
            "facility": job.facility,
            "audit_hash": audit_hash,
        }
    )
    payload: dict[str, Any] = message.model_dump(mode="json", by_alias=True)
    return payload


def order_summary(
    report: dict[str, Any], message_id: str, *, station: str, region: str, closed_at: str
) -> dict[str, Any]:
    """The OrderSummary payload for a closed order, from its reconciliation report."""
    totals = report["totals"]
    message = OrderSummary.model_validate(
        {
            "schema": "reflash.order-summary/1.1",
            "message_id": message_id,
            "station": station,
            "region": region,
            "order_ref": report["order_ref"],
            "kind": report["kind"],
            "requesting_party": report["requesting_party"],
            "closed_at": closed_at,
            "totals": {k: totals[k] for k in ("named", "processed", "outcomes", "charge", "currency")},
            "never_received": report["never_received"],
            "unasked": [hub["chf_id"] for hub in report["unasked"]],
        }
    )
    payload: dict[str, Any] = message.model_dump(mode="json", by_alias=True)
    return payload


def audit_checkpoint(checkpoint: Checkpoint, message_id: str, *, region: str) -> dict[str, Any]:
    """The AuditCheckpoint payload for a signed checkpoint, checked against the model before it enters the outbox."""
    message = AuditCheckpoint.model_validate(
        {
            "schema": "reflash.audit-checkpoint/1.2",
            "message_id": message_id,
            "station": checkpoint.station,
            "region": region,
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "at": checkpoint.at,
            "key_fingerprint": checkpoint.key_fingerprint,
            "signature": checkpoint.signature.hex(),
        }
    )
    payload: dict[str, Any] = message.model_dump(mode="json", by_alias=True)
    return payload

"""The audit key handover: how a station's checkpoint key is replaced without a gap in what the trail proves.

A handover is an `audit_key_handover` entry in the trail, naming the old and new keys (fingerprints and public
keys) with the new key's signature over a handover statement (station, the entry's place in the chain, both
fingerprints): the new key proves it is held, and vouches for its predecessor. The old key then signs a checkpoint at
that entry, so its signature covers the new key's fingerprint; every checkpoint after the entry is the new key's.

`KeyChain.follow` reads the handovers of a trail into the chain of keys K0 -> K1 -> ... -> Kn and says which key must
have signed the checkpoint at each entry. Each handover is signed by both of its keys, so the chain can be entered
at any of its keys: `audit verify` enters it at the configured key, whether that is the first or the newest.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.errors import KeyFileError
from firmware_catalog.keys import fingerprint, public_key_from_pem, public_key_pem, verify_raw
from firmware_catalog.signer import Signer

__all__ = ["HANDOVER_KIND", "ChainBroken", "KeyChain", "chain_keys", "handover_data", "handover_message"]

HANDOVER_KIND = "audit_key_handover"


def _canonical(value: Any) -> bytes:
    # The canonical JSON of station.audit (which imports this module, so it cannot be imported from there).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def handover_message(station: str, seq: int, prev: str, old_fingerprint: str, new_fingerprint: str) -> bytes:
    """What the new key signs: the handover, bound to its place in this station's chain (entry `seq` after `prev`)."""
    return _canonical(
        {
            "kind": "audit-key-handover",
            "station": station,
            "seq": seq,
            "prev": prev,
            "old": old_fingerprint,
            "new": new_fingerprint,
        }
    )


def handover_data(station: str, seq: int, prev: str, old: ec.EllipticCurvePublicKey, new: Signer) -> dict[str, Any]:
    """The handover entry's data, with the new key's proof made now."""
    old_fp, new_fp = fingerprint(old), fingerprint(new.public_key())
    proof = new.sign(handover_message(station, seq, prev, old_fp, new_fp))
    return {
        "old_fingerprint": old_fp,
        "old_public_key_pem": public_key_pem(old).decode(),
        "new_fingerprint": new_fp,
        "new_public_key_pem": public_key_pem(new.public_key()).decode(),
        "proof": proof.hex(),
    }


class ChainBroken(Exception):
    """A handover that does not hold, or a configured key the chain does not reach; `seq` is the entry to blame."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class _Handover:
    seq: int
    old: ec.EllipticCurvePublicKey
    new: ec.EllipticCurvePublicKey


def _read_handover(seq: int, prev: str, station: str, data: dict[str, Any]) -> _Handover:
    def key(side: str) -> ec.EllipticCurvePublicKey:
        try:
            public = public_key_from_pem(str(data[f"{side}_public_key_pem"]).encode(), f"{side}_public_key_pem")
        except (KeyError, KeyFileError) as exc:
            raise ChainBroken(seq, f"the key handover at entry {seq} has no readable {side} key: {exc}") from exc
        if fingerprint(public) != data.get(f"{side}_fingerprint"):
            raise ChainBroken(seq, f"the key handover at entry {seq}: {side}_fingerprint does not match its key")
        return public

    old, new = key("old"), key("new")
    try:
        proof = bytes.fromhex(str(data["proof"]))
    except (KeyError, ValueError):
        proof = b""
    message = handover_message(station, seq, prev, fingerprint(old), fingerprint(new))
    if not verify_raw(new, message, proof):
        raise ChainBroken(seq, f"the key handover at entry {seq} is not signed by the new key it names")
    return _Handover(seq, old, new)


class KeyChain:
    """The station's checkpoint keys in the order they were handed over, and where each took over."""

    def __init__(self, keys: Sequence[ec.EllipticCurvePublicKey], handover_seqs: Sequence[int]) -> None:
        self.keys = tuple(keys)
        self.handover_seqs = tuple(handover_seqs)

    @classmethod
    def follow(
        cls, anchor: ec.EllipticCurvePublicKey, handovers: Sequence[tuple[int, str, str, dict[str, Any]]]
    ) -> KeyChain:
        """The chain from the trail's handovers, given as (seq, prev, station, data) in order; `anchor` (the key
        configured) must be one of its keys. Raises ChainBroken."""
        keys: list[ec.EllipticCurvePublicKey] = []
        seqs: list[int] = []
        for seq, prev, station, data in handovers:
            handover = _read_handover(seq, prev, station, data)
            if keys and fingerprint(handover.old) != fingerprint(keys[-1]):
                raise ChainBroken(
                    seq,
                    f"the key handover at entry {seq} hands over from key {fingerprint(handover.old)[:16]}, but the "
                    f"key in force was {fingerprint(keys[-1])[:16]}",
                )
            if not keys:
                keys.append(handover.old)
            keys.append(handover.new)
            seqs.append(seq)
        if not keys:
            return cls([anchor], [])
        known = [fingerprint(k) for k in keys]
        if fingerprint(anchor) not in known:
            raise ChainBroken(
                seqs[0],
                f"the configured station key {fingerprint(anchor)[:16]} is not in the audit's chain of keys "
                f"({' -> '.join(fp[:16] for fp in known)})",
            )
        return cls(keys, seqs)

    def key_at(self, seq: int) -> ec.EllipticCurvePublicKey:
        """The key that must sign a checkpoint at entry `seq`: a handover's own checkpoint is the old key's."""
        return self.keys[bisect.bisect_left(self.handover_seqs, seq)]


class _Entry(Protocol):
    # What of an audit entry (station.audit.AuditEntry, which imports this module) a chain of keys is read from.
    @property
    def seq(self) -> int: ...
    @property
    def prev(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def station(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


def chain_keys(entries: Iterable[_Entry], anchor: ec.EllipticCurvePublicKey) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """Every key that signed the trail's checkpoints in its time, from `anchor` (the configured key) along the
    trail's handovers; `anchor` alone when the chain does not hold (`verify_chain` says why)."""
    handovers = [(e.seq, e.prev, e.station, e.data) for e in entries if e.kind == HANDOVER_KIND]
    try:
        return KeyChain.follow(anchor, handovers).keys
    except ChainBroken:
        return (anchor,)

"""Faults a simulated hub can be told to have, written as a small spec string: `power-loss@65536,corrupt-every=7`.

Grammar (spaces around items are ignored; an empty spec means no fault):

    spec   := item ("," item)*
    item   := event "@" N          one-shot: happens when the hub's held image first reaches byte N in this power cycle
            | rule "=" N           standing behaviour with a parameter
            | flag                 standing behaviour
    N      := decimal digits (underscores allowed), at least 1

    events: power-loss@N    the hub loses power: stops dead, link drops; the bytes it held before N are kept
            disconnect@N    the link drops (hub stays powered, keeps everything in memory)
            swap@N          the link drops and the jig holds a different hub (`SimJig`'s `swap_to`) from then on
            flood-sof@N     the hub answers nothing more on this link and sends `A5 5A` continuously at line rate
                            instead, until the link drops (a hostile or broken hub jamming the station's deframer)
    rules:  silent-after=N  once the held image reaches byte N, the hub never sends another byte (until power cycle)
            corrupt-every=K every Kth frame the hub sends has one byte flipped (K >= 2)
            trickle=B       a failing flash: the hub takes at most B bytes of each DATA frame it accepts, and each
                            write takes 0.15 s (`TRICKLE_WRITE_S`): tiny, steady progress (16 bytes per 0.15 s
                            for trickle=16), acknowledged honestly
    flags:  activation-fail           activation passes the hub's checks, the new image fails to boot:
                                      CS06 3 Activation Failure, old version still running, image still held
            old-version-after-reboot  activation claims CS06 0 Success but the hub still runs the old version
            refuse-image              begin-transfer is refused (REFUSED_BY_HUB)
            stuck                     the hub reboots to activate and never comes back (until power cycle)
            no-store                  DATA is acknowledged but the flash keeps zeros of the same length (a silently
                                      failing flash write)
            echo-hash                 VERIFY echoes the size and hashes given at begin-transfer with signature_ok 1;
                                      ACTIVATE with those hashes answers Success and the hub then reports the file
                                      version of the header bytes it received, while still running the old image
            claim-full-resume         ACCEPT always offers to resume at the end of the image
            resume-by-mi              old firmware: resumes what it holds when the MI hash and size match, whatever
                                      the whole-file hash (a stale envelope is resumed, or a new tail spliced on)
            ignore-erase              ERASE answers DONE and forgets nothing
            activate-then-drop        ACTIVATE drops the link at once, unanswered; the activation completes in the
                                      background after the reboot delay
            nak-forever               a flash whose every write fails: every DATA frame is answered
                                      NAK(held, BAD_DATA), nothing is written, ever

Each fault may appear once. Errors name the item, its position in the spec and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

__all__ = ["TRICKLE_WRITE_S", "FaultSpecError", "Faults", "parse_faults"]

# How long one flash write takes a `trickle=B` hub.
TRICKLE_WRITE_S = 0.15


class FaultSpecError(ValueError):
    """A fault spec that does not follow the grammar; says which item, where, and why."""


@dataclass(frozen=True)
class Faults:
    """A parsed fault spec. Field names are the spec names with `_` for `-`; `str()` gives the canonical spec."""

    power_loss: int | None = None
    disconnect: int | None = None
    silent_after: int | None = None
    corrupt_every: int | None = None
    activation_fail: bool = False
    old_version_after_reboot: bool = False
    refuse_image: bool = False
    stuck: bool = False
    swap: int | None = None
    no_store: bool = False
    echo_hash: bool = False
    claim_full_resume: bool = False
    resume_by_mi: bool = False
    ignore_erase: bool = False
    activate_then_drop: bool = False
    flood_sof: int | None = None
    nak_forever: bool = False
    trickle: int | None = None

    def __str__(self) -> str:
        items = []
        for f in fields(self):
            value = getattr(self, f.name)
            name = f.name.replace("_", "-")
            if value is True:
                items.append(name)
            elif isinstance(value, int) and not isinstance(value, bool):
                items.append(f"{name}{_FORMS[name]}{value}")
        return ",".join(items)


_FORMS = {
    "power-loss": "@",
    "disconnect": "@",
    "silent-after": "=",
    "corrupt-every": "=",
    "activation-fail": "",
    "old-version-after-reboot": "",
    "refuse-image": "",
    "stuck": "",
    "swap": "@",
    "no-store": "",
    "echo-hash": "",
    "claim-full-resume": "",
    "resume-by-mi": "",
    "ignore-erase": "",
    "activate-then-drop": "",
    "flood-sof": "@",
    "nak-forever": "",
    "trickle": "=",
}
_MINIMUM = {"corrupt-every": 2}
_ITEM = re.compile(r"(?P<name>[a-z][a-z-]*)(?:(?P<sep>[@=])(?P<value>.*))?")


def _usage(name: str) -> str:
    form = _FORMS[name]
    return f"{name}{form}N" if form else name


def parse_faults(spec: str) -> Faults:
    """Parse a fault spec strictly. Raises FaultSpecError naming the item and its character position."""
    values: dict[str, int | bool] = {}
    if not spec.strip():
        return Faults()
    position = 0
    for index, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        at = position + (len(raw) - len(raw.lstrip()))
        position += len(raw) + 1
        where = f"fault spec {spec!r}: item {index} {item!r} at character {at}"
        match = _ITEM.fullmatch(item)
        if not item or match is None:
            raise FaultSpecError(f"{where}: expected NAME, NAME@N or NAME=N")
        name, sep, value = match["name"], match["sep"] or "", match["value"]
        if name not in _FORMS:
            raise FaultSpecError(f"{where}: unknown fault {name!r}; known: {', '.join(_usage(n) for n in _FORMS)}")
        if sep != _FORMS[name]:
            raise FaultSpecError(f"{where}: {name} is written {_usage(name)}")
        key = name.replace("-", "_")
        if key in values:
            raise FaultSpecError(f"{where}: {name} is given twice")
        if not sep:
            values[key] = True
            continue
        if not re.fullmatch(r"[0-9][0-9_]*", value or ""):
            raise FaultSpecError(f"{where}: {name} needs a whole number of bytes after {sep!r}, got {value!r}")
        number = int(value)
        if number < _MINIMUM.get(name, 1):
            raise FaultSpecError(f"{where}: {name} must be at least {_MINIMUM.get(name, 1)}, got {number}")
        values[key] = number
    return Faults(**values)  # type: ignore[arg-type]

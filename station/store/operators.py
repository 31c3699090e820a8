"""The roster: the operators who sign in at the bench page with a PIN, and the API tokens of line controllers, each
with a role (`operator` scans and dispatches; `supervisor` also closes orders and releases UNEXPECTED hubs).

Nothing secret is kept. A PIN is stored as scrypt (`SCRYPT_N`, `SCRYPT_R`, `SCRYPT_P`, a random 16-byte salt per
PIN, a 32-byte key; the parameters are written beside each hash so that they can be raised later); five wrong PINs
in a row lock the operator out for 15 minutes. A token is 32 random bytes, shown once, and stored as its SHA-256
(a random token needs no slow hash). Every change to the roster, every sign-in and every lockout is an audit entry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from station.identifier import check_label, check_name
from station.store.unit_of_work import StoreError

if TYPE_CHECKING:
    from station.store.audit_log import AuditLog
    from station.store.database import Session as DbSession
    from station.store.unit_of_work import UnitOfWork

__all__ = [
    "LOCKOUT",
    "MAX_FAILURES",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "ApiToken",
    "Operator",
    "Role",
    "Roster",
    "SignInAttempt",
    "SignInRefused",
    "check_badge",
    "check_pin",
    "hash_pin",
    "pin_matches",
]

# scrypt's cost: 2**14 x 8 x 128 bytes = 16 MiB of memory and about 50 ms per PIN on a bench PC (OWASP's minimum
# for scrypt is N=2**17 with p=1 at interactive logins; a 4-12 digit PIN is guarded by the lockout more than by the
# hash, and the page must stay responsive while it checks one).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


class Role(StrEnum):
    OPERATOR = "operator"  # scan in, dispatch
    SUPERVISOR = "supervisor"  # also close an order, release an UNEXPECTED hub

    def may(self, needed: Role) -> bool:
        return self is Role.SUPERVISOR or needed is Role.OPERATOR


class SignInRefused(Exception):
    """A sign-in that failed: an unknown operator, a wrong PIN, or a lockout. The message is safe to show."""


@dataclass(frozen=True)
class Operator:
    id: str
    role: Role
    added_at: str
    failures: int
    locked_until: str | None
    has_badge: bool = False


@dataclass(frozen=True)
class SignInAttempt:
    """What a PIN is to be checked against, read before the check: scrypt takes about 50 ms, which the bench page
    spends on a worker thread, not on the event loop that serves the bench."""

    operator_id: str | None  # None: no operator has this id or badge
    pin_hash: str
    via: str  # "id" or "badge": how the operator was named
    said_as: str | None  # what the audit names: the operator's id (None when unknown)

    def pin_matches(self, pin: str) -> bool:
        return pin_matches(pin, self.pin_hash)


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: Role
    added_at: str
    revoked_at: str | None


def check_pin(pin: str) -> str:
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise ValueError("a PIN is 4 to 12 digits")
    return pin


def hash_pin(pin: str, *, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$N$r$p$SALT$KEY` (hex), the one form a PIN is stored in."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != "scrypt":
        return False
    again = hash_pin(pin, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(again.rsplit("$", 1)[1], key)


def check_badge(badge: str) -> str:
    """A badge's code as a scanner types it: 4 to 128 printable ASCII characters, no spaces at the ends."""
    if not (badge.isascii() and badge.isprintable() and 4 <= len(badge) <= 128 and badge == badge.strip()):
        raise ValueError("a badge code is 4 to 128 printable ASCII characters")
    return badge


def _badge_hash(badge: str) -> str:
    return hashlib.sha256(b"reflash-badge:" + badge.encode()).hexdigest()


@functools.cache
def _unknown_pin_hash() -> str:
    return hash_pin(secrets.token_hex(8))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Roster:
    """Operators and API tokens: who may act at the bench page and the API, and as what."""

    def __init__(self, work: UnitOfWork, audit_log: AuditLog) -> None:
        self._work = work
        self._audit_log = audit_log

    # -- operators ------------------------------------------------------------------------------------------------

    def add_operator(self, operator_id: str, role: Role, pin: str, badge: str | None = None) -> None:
        check_label(operator_id)
        pin_hash = hash_pin(check_pin(pin))
        badge_hash = None if badge is None else _badge_hash(check_badge(badge))
        with self._work.transaction() as session:
            if session.execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone():
                raise StoreError(f"operator {operator_id!r} exists already (remove it first to change it)")
            self._refuse_known_badge(session, badge_hash)
            session.execute(
                "INSERT INTO operators (id, role, pin_hash, added_at, badge_sha256) VALUES (?,?,?,?,?)",
                (operator_id, role.value, pin_hash, self._work.now(), badge_hash),
            )
            self._audit_log.append(session, "operator_added", {"operator_id": operator_id, "role": role.value,
                                                               "badge": badge is not None})  # fmt: skip

    def set_badge(self, operator_id: str, badge: str | None) -> None:
        """Give the operator a badge (a lost one is replaced), or take it away (None)."""
        badge_hash = None if badge is None else _badge_hash(check_badge(badge))
        with self._work.transaction() as session:
            self._refuse_known_badge(session, badge_hash, operator_id)
            changed = session.execute(
                "UPDATE operators SET badge_sha256 = ? WHERE id = ?", (badge_hash, operator_id)
            ).rowcount
            if changed == 0:
                raise StoreError(f"no operator {operator_id!r}")
            self._audit_log.append(session, "operator_badge_set" if badge else "operator_badge_removed",
                                   {"operator_id": operator_id})  # fmt: skip

    @staticmethod
    def _refuse_known_badge(session: DbSession, badge_hash: str | None, holder: str | None = None) -> None:
        if badge_hash is None:
            return
        row = session.execute("SELECT id FROM operators WHERE badge_sha256 = ?", (badge_hash,)).fetchone()
        if row is not None and row["id"] != holder:
            raise StoreError(f"that badge is operator {row['id']}'s already")

    def remove_operator(self, operator_id: str) -> None:
        with self._work.transaction() as session:
            if session.execute("DELETE FROM operators WHERE id = ?", (operator_id,)).rowcount == 0:
                raise StoreError(f"no operator {operator_id!r}")
            self._audit_log.append(session, "operator_removed", {"operator_id": operator_id})

    def operators(self) -> list[Operator]:
        rows = self._work.reader().execute("SELECT * FROM operators ORDER BY id")
        return [
            Operator(
                r["id"], Role(r["role"]), r["added_at"], r["failures"], r["locked_until"], r["badge_sha256"] is not None
            )
            for r in rows
        ]

    def on_roster(self, operator_id: str) -> bool:
        """Whether the operator may still act (not removed since signing in)."""
        return (
            self._work.reader().execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone() is not None
        )

    def sign_in(self, identity: str, pin: str) -> Operator:
        """The operator, if the PIN is theirs and they are not locked out; else `SignInRefused`. `identity` is an
        operator id or a badge's code. The bench page runs the same two steps with the slow PIN check between them
        off the event loop (`begin_sign_in`, `SignInAttempt.pin_matches`, `finish_sign_in`)."""
        attempt = self.begin_sign_in(identity)
        return self.finish_sign_in(attempt, attempt.pin_matches(pin))

    def begin_sign_in(self, identity: str) -> SignInAttempt:
        """Who `identity` names (an operator id, else a badge) and the PIN hash to check; nothing is written."""
        reader = self._work.reader()
        row = reader.execute("SELECT id, pin_hash FROM operators WHERE id = ?", (identity,)).fetchone()
        via = "id"
        if row is None and identity:
            via = "badge"
            row = reader.execute(
                "SELECT id, pin_hash FROM operators WHERE badge_sha256 = ?", (_badge_hash(identity),)
            ).fetchone()
        if row is None:
            # An unknown identity is checked against a hash all the same, so that it takes as long to refuse; what
            # was typed is not audited (it may be a PIN in the wrong field, or a badge not yet on the roster).
            return SignInAttempt(None, _unknown_pin_hash(), via, None)
        return SignInAttempt(row["id"], row["pin_hash"], via, row["id"])

    def finish_sign_in(self, attempt: SignInAttempt, matched: bool) -> Operator:
        """Record the attempt in one transaction: a failure counts (the fifth in a row locks out for `LOCKOUT`), a
        success resets the count. The lockout is read here, after the check, so that attempts made together cannot
        pass it."""
        now = datetime.fromisoformat(self._work.now())
        said = {"operator_id": attempt.said_as, "via": attempt.via}  # never a badge's code: it signs in
        with self._work.transaction() as session:
            row = None
            if attempt.operator_id is not None:
                row = session.execute("SELECT * FROM operators WHERE id = ?", (attempt.operator_id,)).fetchone()
            if row is None:
                self._audit_log.append(session, "sign_in_refused", {**said, "why": "unknown"})
                refused = "unknown operator or wrong PIN"
            elif row["locked_until"] is not None and datetime.fromisoformat(row["locked_until"]) > now:
                self._audit_log.append(session, "sign_in_refused", {**said, "why": "locked"})
                refused = f"operator {row['id']} is locked out until {row['locked_until']} (too many wrong PINs)"
            elif not matched:
                failures = int(row["failures"]) + 1
                locked = failures >= MAX_FAILURES
                until = (now + LOCKOUT).isoformat(timespec="milliseconds").replace("+00:00", "Z") if locked else None
                session.execute(
                    "UPDATE operators SET failures = ?, locked_until = ? WHERE id = ?",
                    (0 if locked else failures, until, row["id"]),
                )
                self._audit_log.append(session, "operator_locked_out" if locked else "sign_in_refused",
                                       {**said, "why": "wrong_pin", "failures": failures,
                                        "locked_until": until})  # fmt: skip
                refused = (
                    f"operator {row['id']} is locked out until {until} (too many wrong PINs)"
                    if locked
                    else "unknown operator or wrong PIN"
                )
            else:
                session.execute("UPDATE operators SET failures = 0, locked_until = NULL WHERE id = ?", (row["id"],))
                self._audit_log.append(session, "operator_signed_in", {"operator": row["id"], "via": "bench_page",
                                                                       "with": attempt.via})  # fmt: skip
                return Operator(row["id"], Role(row["role"]), row["added_at"], 0, None, row["badge_sha256"] is not None)
        raise SignInRefused(refused)

    # -- API tokens -----------------------------------------------------------------------------------------------

    def add_token(self, name: str, role: Role) -> str:
        """A new token for `name`; returns it (the only time it is seen: only its hash is kept)."""
        check_name(name)
        token = "rfs_" + secrets.token_urlsafe(32)
        with self._work.transaction() as session:
            if session.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"a token named {name!r} exists already (revoked or not: names are not reused)")
            session.execute(
                "INSERT INTO api_tokens (name, role, token_sha256, added_at) VALUES (?,?,?,?)",
                (name, role.value, _token_hash(token), self._work.now()),
            )
            self._audit_log.append(session, "api_token_added", {"name": name, "role": role.value})
        return token

    def revoke_token(self, name: str) -> None:
        with self._work.transaction() as session:
            changed = session.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (self._work.now(), name)
            ).rowcount
            if changed == 0:
                raise StoreError(f"no token {name!r} in force")
            self._audit_log.append(session, "api_token_revoked", {"name": name})

    def tokens(self) -> list[ApiToken]:
        rows = self._work.reader().execute("SELECT * FROM api_tokens ORDER BY name")
        return [ApiToken(r["name"], Role(r["role"]), r["added_at"], r["revoked_at"]) for r in rows]

    def token(self, token: str) -> ApiToken | None:
        """The token in force that `token` is, or None (unknown or revoked)."""
        row = (
            self._work.reader()
            .execute("SELECT * FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL", (_token_hash(token),))
            .fetchone()
        )
        return None if row is None else ApiToken(row["name"], Role(row["role"]), row["added_at"], None)

"""States that only a crash leaves behind, made on purpose, for the tests that prove the station recovers from them.

Nothing in the station calls this module: a test that needs a state no store operation can reach (the station died
between two of its own transactions) makes it here, by name, rather than by writing SQL of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from station.store.unit_of_work import UnitOfWork

__all__ = ["forget_confirmations"]


def forget_confirmations(work: UnitOfWork) -> None:
    """Every outbox message back at the broker, unacked, as if the station died before it recorded the DSP's acks."""
    with work.transaction() as session:
        session.execute("UPDATE outbox SET state = 'at_broker'")

"""Writing a file so that a reader, or a crash, never sees half of it: temp file, fsync, rename."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Readers see the old file or the new one, never half. `durable=False` skips the fsync, for files that are
    rewritten every moment and worth nothing after a power cut (the live status)."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        # Name the file the caller asked for, not our temporary one; leave no temporary file behind.
        tmp.unlink(missing_ok=True)
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc

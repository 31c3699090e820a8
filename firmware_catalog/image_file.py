"""Reading an image file out of a catalog folder, safely: the folder is data, and data can be hostile.

An entry's `image` names a file inside the catalog folder. What is there may be anything: a FIFO (a plain read
blocks until a writer comes, forever), a device (`/dev/zero` never ends), a directory, a symlink out of the folder,
or a file far larger than any image. `read_catalog_image` reads only a regular file that lies inside the folder
once symlinks are resolved, opens it without blocking and checks what it opened (the open file's own `fstat`, so
nothing can be swapped between the check and the read), and reads at most the size the catalog records for it.
A refusal carries the reason code the policy gives the hub; it is never an exception the caller must guess at.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from firmware_catalog.errors import CatalogError
from firmware_catalog.reason import ReasonCode

__all__ = ["ImageFileRefused", "read_catalog_image"]

_CHUNK = 1 << 20


class ImageFileRefused(CatalogError):
    """The entry's image file cannot be read as the catalog's image; `code` is the policy's reason code."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        self.code = code
        self.detail = message
        super().__init__(f"{code.value}: {message}")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_catalog_image(folder: Path, name: str, size: int) -> bytes:
    """The bytes of `folder / name`, at most `size` of them. Raises ImageFileRefused:

    - IMAGE_MISSING: no such file, or it is not a regular file inside the folder (a FIFO, a device, a directory,
      a socket, a symlink that leads out of the folder or nowhere), or it cannot be opened;
    - MALFORMED_IMAGE: it is larger than `size`, the length of the file the catalog approved (it is not read).

    A shorter file is returned as it is: the image parser names what is missing from it.
    """
    path = folder / name
    try:
        root = folder.resolve(strict=True)
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise ImageFileRefused(ReasonCode.IMAGE_MISSING, f"{path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not target.is_relative_to(root):
        raise ImageFileRefused(ReasonCode.IMAGE_MISSING, f"{path}: leads out of the catalog folder (to {target})")
    # O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: the resolved path ends in no symlink, so
    # one put there since is refused rather than followed.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise ImageFileRefused(ReasonCode.IMAGE_MISSING, f"{path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageFileRefused(ReasonCode.IMAGE_MISSING, f"{path}: {_kind(info.st_mode)}, not an image file")
        if info.st_size > size:
            raise ImageFileRefused(
                ReasonCode.MALFORMED_IMAGE,
                f"{path}: {info.st_size} bytes, larger than the {size}-byte file the catalog approved; not read",
            )
        chunks: list[bytes] = []
        held = 0
        # One byte more than allowed tells a file that grew since fstat from one that did not.
        while held <= size:
            chunk = os.read(fd, min(_CHUNK, size + 1 - held))
            if not chunk:
                break
            chunks.append(chunk)
            held += len(chunk)
    except OSError as exc:
        raise ImageFileRefused(ReasonCode.IMAGE_MISSING, f"{path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if held > size:
        raise ImageFileRefused(
            ReasonCode.MALFORMED_IMAGE, f"{path}: larger than the {size}-byte file the catalog approved"
        )
    return b"".join(chunks)

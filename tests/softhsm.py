"""A SoftHSM2 of a test's own: its configuration and token folder in the test's temporary folder (never the
machine's tokens), tokens made with softhsm2-util, and PKCS#11 URIs that name keys in them.

SoftHSM2 reads $SOFTHSM2_CONF and its token folder when the module is initialised (C_Initialize), once per
process; a token made afterwards is seen only after re-initialising, so `init_token` re-initialises the module
loaded in this process (the CLI tests run in-process). Subprocesses inherit $SOFTHSM2_CONF and start afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest

__all__ = ["MODULE", "PIN", "SoftHsm"]

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4711-user"
SO_PIN = "0815-security-officer"


@dataclass
class SoftHsm:
    root: Path
    pin_file: Path

    @classmethod
    def start(cls, root: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
        if shutil.which("softhsm2-util") is None or not Path(MODULE).is_file():
            pytest.fail("SoftHSM2 is not installed: run `make softhsm` (Debian's softhsm2)")
        (root / "tokens").mkdir(parents=True)
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
        pin_file = root / "pin"
        pin_file.write_text(PIN + "\n")
        pin_file.chmod(0o600)
        return cls(root, pin_file)

    def init_token(self, label: str, pin: str = PIN) -> None:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        pkcs11.lib(MODULE).reinitialize()

    def uri(self, token: str, key: str, pin_file: Path | None = None) -> str:
        pin = pin_file if pin_file is not None else self.pin_file
        return f"pkcs11:token={token};object={key}?module-path={MODULE}&pin-source=file:{pin}"

    def session(self, token: str, pin: str = PIN) -> pkcs11.Session:
        """A read-write session of the test's own on the token, logged in (to look at or add objects directly)."""
        return pkcs11.lib(MODULE).get_token(token_label=token).open(rw=True, user_pin=pin)

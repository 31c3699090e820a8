"""The reporter over TLS with a client certificate and a password from the environment, on a real Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.config import MqttConfig
from station.mosquitto import Mosquitto
from station.reporter import Reporter
from station.store import Store
from tests.station.conftest import ACTOR

PASSWORD = "s3cret-not-for-logs"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("broker", ACTOR.station):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(pki / who, _issue(who, key, ca.subject, ca_key), key)
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None
    subprocess.run([tool, "-b", "-c", str(pki / "passwd"), ACTOR.station, PASSWORD], check=True)
    broker = Mosquitto(
        tmp_path / "broker",
        extra_conf=(
            f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'broker.crt'}\nkeyfile {pki / 'broker.key'}\n"
            f"require_certificate true\nallow_anonymous false\npassword_file {pki / 'passwd'}\n"
        ),
    )
    broker.start()
    yield broker, pki
    broker.stop()


async def _connects(store: Store, broker: Mosquitto, pki: Path) -> bool:
    config = MqttConfig(
        url=f"mqtts://127.0.0.1:{broker.port}", username=ACTOR.station, password_env="TEST_REFLASH_MQTT_PASSWORD",
        ca=pki / "ca.crt", cert=pki / f"{ACTOR.station}.crt", key=pki / f"{ACTOR.station}.key",
    )  # fmt: skip
    birth = {"software_version": "test", "facility": ACTOR.facility, "slots": 0}
    reporter = Reporter(store, config, station=ACTOR.station, region="North", birth=birth)
    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(5):
            await reporter.connected.wait()
        return True
    except TimeoutError:
        return False
    finally:
        reporter.stop()
        await task


async def test_tls_with_client_certificate_and_password_from_environment(
    tls_broker: tuple[Mosquitto, Path], store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broker, pki = tls_broker
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_REFLASH_MQTT_PASSWORD", PASSWORD)
    assert await _connects(store, broker, pki)
    monkeypatch.setenv("TEST_REFLASH_MQTT_PASSWORD", "wrong")
    assert not await _connects(store, broker, pki)
    assert PASSWORD not in caplog.text

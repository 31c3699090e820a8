"""The fleet's brokers, run from the shipped files for tests and benchmarks: a central broker
(config/fleet/central-broker.conf and central.acl), site brokers (config/mosquitto.conf and mosquitto.acl with
config/fleet/site-bridge.conf) bridged to it over TLS through a link that can be cut, and DSP bridges consuming
from the centre as processes of their own, writing one SMI database.

Only paths, ports and the bridge's reconnect delay are substituted, each checked to be in the shipped file, so the
configuration proven is the one shipped. Stations and sites beyond the ones the shipped ACLs name get blocks made
the way those files say to add them (one per station at its site, its lines at the centre in its site's block).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from station.config import MqttConfig
from station.mosquitto import Mosquitto, free_port
from station.throwaway_ca import ThrowawayCa

__all__ = ["DSP_USER", "Fleet", "Site", "SiteLink", "central_acl", "site_acl"]

CONFIG = Path(__file__).resolve().parents[1] / "config"
FLEET = CONFIG / "fleet"
DSP_USER = "dsp-bridge"
_STATION_CHANNELS = (("write", "status"), ("write", "result"), ("write", "order/+"), ("write", "slot/+"),
                     ("write", "checkpoint"), ("write", "heartbeat"), ("read", "ack"), ("read", "resend"))  # fmt: skip


def _substitute(text: str, source: Path, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        if old not in text:
            raise ValueError(f"{source}: {old!r} is no longer there; station/fleet_brokers.py must follow the file")
        text = text.replace(old, new)
    return text


def _station_lines(station: str, region: str) -> list[str]:
    return [f"topic {how} reflash/v1/{region}/{station}/{what}" for how, what in _STATION_CHANNELS]


def site_acl(stations: dict[str, str]) -> str:
    """config/mosquitto.acl with a block for each station (ID -> region) it does not name yet."""
    text = (CONFIG / "mosquitto.acl").read_text()
    for station, region in stations.items():
        if f"\nuser {station}\n" not in text:
            lines = [f"user {station}", *_station_lines(station, region), "topic read reflash/v1/STATE/+"]
            text += f"\n# Station {station}, region {region}.\n" + "\n".join(lines) + "\n"
    return text


def central_acl(sites: dict[str, dict[str, str]]) -> str:
    """config/fleet/central.acl with a block for each site (name -> its stations) it does not name yet."""
    text = (FLEET / "central.acl").read_text()
    for site, stations in sites.items():
        if f"\nuser {site}\n" not in text:
            lines = [f"user {site}"]
            for station, region in stations.items():
                lines += _station_lines(station, region)
            lines += ["topic read reflash/v1/STATE/+", f"topic readwrite reflash-link/{site}/state"]
            text += f"\n# Site {site}.\n" + "\n".join(lines) + "\n"
    return text


class SiteLink:
    """The site-to-centre link: a TCP relay on loopback that can be cut (its connections reset and its port closed,
    so the site's bridge finds the centre unreachable: connection refused) and restored on the same port. Counts
    the bytes it carries each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.bytes_out = 0  # site -> centre
        self.bytes_in = 0  # centre -> site
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer, out=True), self._pump(up_reader, writer, out=False))
        except asyncio.CancelledError:
            # The link closed under the relay: nothing awaits this handler, and asyncio would log the cancellation.
            pass
        finally:
            for end in (writer, up_writer):
                end.transport.abort()
                self._open.discard(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, out: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if out:
                    self.bytes_out += len(chunk)
                else:
                    self.bytes_in += len(chunk)
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for end in list(self._open):
            end.transport.abort()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()


@dataclass
class Site:
    """A warehouse: its broker, its link to the centre, and its stations (ID -> region) with their passwords."""

    name: str
    stations: dict[str, str]
    broker: Mosquitto
    link: SiteLink
    passwords: dict[str, Path] = field(default_factory=dict)

    def station_mqtt(self, station: str, *, republish_after_s: float = 30.0, republish_max_s: float = 600.0,
                     max_in_flight: int = 100) -> MqttConfig:  # fmt: skip
        """A station's [mqtt]: its site broker's loopback listener, its username and password file."""
        return MqttConfig(url=self.broker.url, username=station, password_file=self.passwords[station],
                          republish_after_s=republish_after_s, republish_max_s=republish_max_s,
                          max_in_flight=max_in_flight)  # fmt: skip


class Fleet:
    """A central broker, sites bridged to it, and DSP bridge processes sharing one SMI database.

    `site_max_queued` replaces the site brokers' max_queued_messages (to show what a full queue does);
    `cuttable_links=False` connects each site straight to the centre, without the relay in this process (a benchmark
    measures the brokers, not the relay)."""

    def __init__(
        self, workdir: Path, sites: dict[str, dict[str, str]], *, bridges: int = 2,
        site_max_queued: int | None = None, restart_timeout: str = "1 2", cuttable_links: bool = True,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.ca = ThrowawayCa(workdir / "pki")
        self.smi_path = workdir / "smi.db"
        self._site_stations = sites
        self._site_max_queued = site_max_queued
        self._restart_timeout = restart_timeout
        self._cuttable = cuttable_links
        self.central = Mosquitto(workdir / "central", config="")
        self.central.config = self._central_config()
        self.sites = {name: self._site(name, stations) for name, stations in sites.items()}
        self.bridge_names = [f"dsp-bridge-{n}" for n in range(1, bridges + 1)]
        self.bridges: dict[str, subprocess.Popen[bytes]] = {}

    def _central_config(self) -> str:
        folder = self.central.workdir
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue("central")
        acl = folder / "central.acl"
        acl.write_text(central_acl(self._site_stations))
        source = FLEET / "central-broker.conf"
        text = _substitute(source.read_text(), source, [
            ("listener 8883\n", f"listener {self.central.port} 127.0.0.1\n"),
            ("/etc/mosquitto/ca_certificates/central-ca.crt", str(self.ca.ca)),
            ("/etc/mosquitto/certs/central.crt", str(cert)),
            ("/etc/mosquitto/certs/central.key", str(key)),
            ("/etc/mosquitto/reflash-central.acl", str(acl)),
            ("/var/lib/mosquitto/", f"{folder}/"),
            ("log_dest syslog", f"log_dest file {folder}/mosquitto.log"),
        ])  # fmt: skip
        # Started as root, mosquitto would switch to its own user and lose access to the folder.
        return text + f"user {getpass.getuser()}\n"

    def _site(self, name: str, stations: dict[str, str]) -> Site:
        folder = self.workdir / name
        (folder / "conf.d").mkdir(parents=True, exist_ok=True)
        broker = Mosquitto(folder, config="")
        link = SiteLink(self.central.port)
        site = Site(name, stations, broker, link)
        tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
        if tool is None:
            raise RuntimeError("mosquitto_passwd is missing: the mosquitto package provides it")
        passwd = folder / "passwd"
        for station in stations:
            site.passwords[station] = folder / f"{station}.password"
            site.passwords[station].write_text(f"pw-{station}\n")
            subprocess.run([tool, "-b", *([] if passwd.exists() else ["-c"]), str(passwd), station, f"pw-{station}"],
                           check=True)  # fmt: skip
        acl = folder / "reflash.acl"
        acl.write_text(site_acl(stations))
        server_cert, server_key = self.ca.issue(f"{name}-broker")
        bridge_cert, bridge_key = self.ca.issue(name)
        source = CONFIG / "mosquitto.conf"
        replacements = [
            ("listener 8883\n", f"listener {free_port()} 127.0.0.1\n"),
            ("/etc/mosquitto/ca_certificates/site-ca.crt", str(self.ca.ca)),
            ("/etc/mosquitto/certs/broker.crt", str(server_cert)),
            ("/etc/mosquitto/certs/broker.key", str(server_key)),
            ("listener 1883 127.0.0.1", f"listener {broker.port} 127.0.0.1"),
            ("/etc/mosquitto/passwd", str(passwd)),
            ("/etc/mosquitto/reflash.acl", str(acl)),
            ("/var/lib/mosquitto/", f"{folder}/"),
            ("log_dest syslog", f"log_dest file {folder}/mosquitto.log"),
        ]
        if self._site_max_queued is not None:
            replacements.append(("max_queued_messages 200000", f"max_queued_messages {self._site_max_queued}"))
        main = _substitute(source.read_text(), source, replacements)
        source = FLEET / "site-bridge.conf"
        bridge = _substitute(source.read_text(), source, [
            ("address central.reflash.example:8883",
             f"address 127.0.0.1:{link.port if self._cuttable else self.central.port}"),
            ("remote_clientid site-north-a", f"remote_clientid {name}"),
            ("/etc/mosquitto/ca_certificates/central-ca.crt", str(self.ca.ca)),
            ("/etc/mosquitto/certs/site-north-a.crt", str(bridge_cert)),
            ("/etc/mosquitto/certs/site-north-a.key", str(bridge_key)),
            ("reflash-link/site-north-a/state", f"reflash-link/{name}/state"),
            # Seconds, not the shipped minute: a test's outage is seconds long.
            ("restart_timeout 2 60", f"restart_timeout {self._restart_timeout}"),
        ])  # fmt: skip
        (folder / "conf.d" / "reflash-bridge.conf").write_text(bridge)
        broker.config = main + f"include_dir {folder}/conf.d\nuser {getpass.getuser()}\n"
        return site

    async def start(self) -> None:
        self.central.start()
        for site in self.sites.values():
            if self._cuttable:
                await site.link.start()
            site.broker.start()
        for name in self.bridge_names:
            self.start_bridge(name)

    def bridge_command(self, name: str) -> list[str]:
        cert, key = self.ca.folder / f"{DSP_USER}.crt", self.ca.folder / f"{DSP_USER}.key"
        if not cert.exists():
            self.ca.issue(DSP_USER)
        return [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge",
                "--broker", f"mqtts://127.0.0.1:{self.central.port}", "--db", str(self.smi_path), "--name", name,
                "--ca", str(self.ca.ca), "--cert", str(cert), "--key", str(key)]  # fmt: skip

    def start_bridge(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.bridges[name] = subprocess.Popen(self.bridge_command(name), stdout=log, stderr=log)
        log.close()

    def kill_bridge(self, name: str) -> None:
        """SIGKILL: no offline status, no clean disconnect; what it had taken but not acked is redelivered."""
        process = self.bridges.pop(name)
        process.kill()
        process.wait()

    async def stop(self) -> None:
        for process in self.bridges.values():
            process.send_signal(signal.SIGTERM)
        for process in self.bridges.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.bridges.clear()
        for site in self.sites.values():
            site.broker.stop()
            await site.link.close()
        self.central.stop()

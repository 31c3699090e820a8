"""An aiomqtt client that reports the broker's refusals: PUBACK and SUBACK reason codes of 0x80 and above.

aiomqtt 2.5.1 (the newest release) awaits the PUBACK of a QoS 1 publish but drops its reason code (its `_on_publish`
ignores the argument), so a publish the broker's ACL denies (`0x87 Not authorized`) looks like a success. paho 2.x
with `CallbackAPIVersion.VERSION2`, which aiomqtt uses underneath, does hand the reason code to `on_publish`. This
subclass keeps aiomqtt's connection handling and reads the code there; `publish_checked` raises `BrokerRefused`.
It relies on two private names of aiomqtt (`_pending_publishes`, `_pending_call`), which is why pyproject.toml pins
aiomqtt to 2.5.x and tests/station/test_broker_acl.py checks a real refusal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["BrokerClient", "BrokerRefused", "Outgoing", "publish_properties", "raise_for_suback", "with_correlation"]

CONTENT_TYPE = "application/json"


class BrokerRefused(aiomqtt.MqttError):
    """The broker answered a publish or subscribe with a failure reason code (>= 0x80)."""

    def __init__(self, what: str, code: int, name: str) -> None:
        super().__init__(f"{what} refused by the broker: 0x{code:02X} {name}")
        self.code = code
        self.name = name


class _Puback(asyncio.Event):
    reason: ReasonCode | None = None


@dataclass(frozen=True)
class Outgoing:
    """One QoS 1 message for `BrokerClient.publish_window`."""

    topic: str
    payload: bytes
    retain: bool = False
    properties: Properties | None = None


def publish_properties(
    *,
    response_topic: str | None = None,
    correlation: bytes | None = None,
    expiry_s: int | None = None,
) -> Properties:
    """MQTT v5 PUBLISH properties every message of the contract carries: content type and payload format (UTF-8),
    and where given a response topic, correlation data and message expiry."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = CONTENT_TYPE
    properties.PayloadFormatIndicator = 1
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    if expiry_s is not None:
        properties.MessageExpiryInterval = expiry_s
    return properties


def with_correlation(template: Properties, correlation: bytes) -> Properties:
    """A copy of `template` (made by `publish_properties`, so paho has checked its names) with correlation data set.

    paho checks a property's name on every assignment by scanning its tables, about 20 us a message; a copy of a
    checked template with the one value set directly costs about 2 us. Each message gets its own copy: paho keeps a
    message's properties while it is in flight, so one shared object must never change."""
    properties = copy.copy(template)
    # Set as paho's own __setattr__ would store it, without its table scans; the name is a valid PUBLISH property.
    properties.__dict__["CorrelationData"] = correlation
    return properties


def raise_for_suback(topic: str, granted: Any) -> None:
    """Raise BrokerRefused when a SUBACK refuses the subscription (MQTT v5 reason code >= 0x80)."""
    for code in granted:
        if isinstance(code, ReasonCode) and code.is_failure:
            raise BrokerRefused(f"subscription to {topic}", code.value, code.getName())
        if isinstance(code, int) and code >= 0x80:
            raise BrokerRefused(f"subscription to {topic}", code, "Failure")


class BrokerClient(aiomqtt.Client):
    """aiomqtt.Client plus `publish_checked`, which returns only when the broker accepted the message, and, with
    `will_on_error`, a DISCONNECT with reason 0x04 when the block it serves fails, so the broker publishes the will
    (a normal DISCONNECT suppresses it, and a failed reporter would stay `online`)."""

    will_on_error = False

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.will_on_error and not self._disconnected.done():
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            with contextlib.suppress(aiomqtt.MqttError, asyncio.CancelledError):
                await self._wait_for(asyncio.shield(self._disconnected), timeout=5)
        await super().__aexit__(exc_type, exc, tb)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        waiter = self._pending_publishes.get(mid)
        if isinstance(waiter, _Puback):
            waiter.reason = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_checked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- as aiomqtt's own publish()
    ) -> None:
        """Publish and wait for the broker's answer (QoS 1: PUBACK). Raises BrokerRefused on a failure code, and
        aiomqtt.MqttError when the connection fails or the answer does not come in time."""
        if qos == 0:
            await self.publish(topic, payload, qos=0, retain=retain, properties=properties, timeout=timeout)
            return
        (outcome,) = await self.publish_window([Outgoing(topic, payload, retain, properties)], 1, timeout=timeout)
        if outcome is not None:
            raise outcome

    async def publish_window(
        self,
        messages: Sequence[Outgoing],
        in_flight: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- each message's, as aiomqtt's own publish()
    ) -> list[aiomqtt.MqttError | None]:
        """Publish QoS 1 messages in order, at most `in_flight` of them unanswered, and say for each what came of
        it: None when the broker took it (PUBACK), BrokerRefused for a failure reason code, aiomqtt.MqttError when
        no answer came within `timeout` of sending it, or the error that stopped publishing (the connection
        failed), which every message not yet sent shares.

        One coroutine keeps the window, where a task per message with a semaphore would cost a task, a lock and an
        asyncio.wait_for task per message: at a station's rate of results those were a tenth of its CPU. The waits
        are aiomqtt's own (its on_publish sets the waiter), without its count of every call in flight."""
        outcomes: list[aiomqtt.MqttError | None] = [None] * len(messages)
        seconds = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        pending = self._pending_publishes
        # Sent and unanswered, oldest first: (index, mid, waiter, deadline).
        window: collections.deque[tuple[int, int, _Puback, float | None]] = collections.deque()

        async def settle_oldest() -> None:
            index, mid, waiter, deadline = window.popleft()
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter.wait()
            except TimeoutError:
                outcomes[index] = aiomqtt.MqttError("Operation timed out")
                return
            finally:
                # on_publish removes it when the PUBACK comes; a failed or timed-out wait leaves it to us.
                if pending.get(mid) is waiter:
                    del pending[mid]
            reason = waiter.reason
            if reason is not None and reason.is_failure:
                topic = messages[index].topic
                outcomes[index] = BrokerRefused(f"publish to {topic}", reason.value, reason.getName())

        stopped: aiomqtt.MqttError | None = None
        try:
            for index, message in enumerate(messages):
                if stopped is None:
                    while len(window) >= in_flight:
                        await settle_oldest()
                    info = self._client.publish(message.topic, message.payload, 1, message.retain, message.properties)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        stopped = aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                if stopped is not None:
                    outcomes[index] = stopped
                    continue
                if info.mid in pending:
                    raise RuntimeError(f'There already exists a pending call for message ID "{info.mid}"')
                waiter = _Puback()
                pending[info.mid] = waiter
                window.append((index, info.mid, waiter, None if seconds == math.inf else loop.time() + seconds))
            while window:
                await settle_oldest()
        finally:
            # Cancelled (the connection is being torn down): the waits still open are forgotten.
            for _, mid, waiter, _ in window:
                if pending.get(mid) is waiter:
                    del pending[mid]
        return outcomes

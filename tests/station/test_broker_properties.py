"""PUBLISH properties made from a template: the same bytes on the wire as properties built name by name, and the
template untouched (paho keeps a message's properties while it is in flight)."""

from __future__ import annotations

from paho.mqtt.properties import Properties

from station.broker_client import publish_properties, with_correlation


def packed(properties: Properties) -> bytes:
    """The bytes paho puts on the wire for these properties."""
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


def test_a_copy_with_correlation_packs_like_one_built_by_paho() -> None:
    template = publish_properties(response_topic="reflash/v1/North/st-1/ack")
    before = packed(template)
    first = with_correlation(template, b"302850c9-08ee-40e7-8b5b-27d05c66f480")
    second = with_correlation(template, b"other")
    built = publish_properties(
        response_topic="reflash/v1/North/st-1/ack", correlation=b"302850c9-08ee-40e7-8b5b-27d05c66f480"
    )
    assert packed(first) == packed(built)
    # paho's Properties declares its properties only at run time.
    assert first.CorrelationData == b"302850c9-08ee-40e7-8b5b-27d05c66f480"  # type: ignore[attr-defined]
    assert second.CorrelationData == b"other"  # type: ignore[attr-defined]
    assert packed(template) == before
    assert not hasattr(template, "CorrelationData")

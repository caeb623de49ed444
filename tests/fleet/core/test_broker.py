"""Where the fleet's broker is: ``mqtt://`` and ``mqtts://`` URLs, and clear errors otherwise."""

from __future__ import annotations

import pytest

from fleet.core.broker import BrokerUrl
from fleet.errors import BrokerUrlError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://localhost", BrokerUrl("localhost", 1883)),
        ("mqtt://10.0.0.5:11883", BrokerUrl("10.0.0.5", 11883)),
        ("mqtts://broker.example.org", BrokerUrl("broker.example.org", 8883, tls=True)),
        (
            "mqtts://fleet:s%40cret@broker.example.org:9883/",
            BrokerUrl("broker.example.org", 9883, tls=True, username="fleet", password="s@cret"),
        ),
        ("mqtt://fleet@[::1]:1884", BrokerUrl("::1", 1884, username="fleet")),
    ],
)
def test_broker_urls_parse(url: str, expected: BrokerUrl) -> None:
    assert BrokerUrl.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://broker:1883", "unknown scheme 'http'"),
        ("broker:1883", "unknown scheme 'broker'"),
        ("localhost", "unknown scheme ''"),
        ("mqtt://", "no host"),
        ("mqtt://broker:port", "Port could not be cast"),
        ("mqtt://broker:99999", "out of range"),
        ("mqtt://broker/topic", "unexpected path"),
    ],
)
def test_a_bad_broker_url_is_named_with_what_was_expected(url: str, complaint: str) -> None:
    with pytest.raises(BrokerUrlError) as caught:
        BrokerUrl.parse(url)
    message = str(caught.value)
    assert repr(url) in message
    assert complaint in message
    assert "expected mqtt://" in message


def test_a_broker_url_prints_without_its_password() -> None:
    url = BrokerUrl.parse("mqtts://fleet:secret@broker:8883")
    assert str(url) == "mqtts://fleet@broker:8883"
    assert url.client_options()["tls_context"] is not None
    assert BrokerUrl.parse("mqtt://broker").client_options()["tls_context"] is None

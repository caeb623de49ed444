"""The fleet's MQTT broker: where it is (:class:`BrokerUrl`) and, for a one-machine install or
the demo, one running inside the fleet process (:class:`EmbeddedBroker`, amqtt 0.12).

Production points the fleet at mosquitto by URL (``mqtt://user:pw@host:1883`` or
``mqtts://…:8883``); the embedded broker speaks MQTT 3.1.1 only, keeps no sessions of
anonymous clients across a disconnect and loses everything when the process stops.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.errors import BrokerError  # type: ignore[import-untyped]

from fleet.errors import BrokerUrlError, EmbeddedBrokerError

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
#: amqtt logs every connection at INFO; the fleet wants its warnings only.
QUIET_LOGGERS = ("amqtt", "transitions")


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """``mqtt://[user[:password]@]host[:port]`` (default port 1883) or ``mqtts://…``
        (TLS verified by the system's CAs, default port 8883)."""
        expected = "expected mqtt://[USER[:PASSWORD]@]HOST[:PORT] or mqtts://…"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL {url!r}: {exc}; {expected}") from None
        if parts.scheme not in SCHEMES:
            raise BrokerUrlError(f"broker URL {url!r}: unknown scheme {parts.scheme!r}; {expected}")
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {url!r}: no host; {expected}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BrokerUrlError(f"broker URL {url!r}: unexpected path or query; {expected}")
        tls, default_port = SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname,
            port=default_port if port is None else port,
            tls=tls,
            username=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` (after hostname and port)."""
        return {
            "username": self.username,
            "password": self.password,
            "tls_context": ssl.create_default_context() if self.tls else None,
        }

    def __str__(self) -> str:
        """The URL without its password (for logs)."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def shared(topic: str, group: str | None) -> str:
    """``topic`` as an MQTT shared subscription of ``group`` (``$share/GROUP/TOPIC``: the
    broker hands each message to one subscriber of the group), or unchanged without one."""
    return topic if group is None else f"$share/{group}/{topic}"


class EmbeddedBroker:
    """``async with EmbeddedBroker("127.0.0.1", 1883) as broker:`` an amqtt broker on one TCP
    listener, anonymous clients allowed, no ``$SYS`` topics; QoS 1 and retained messages."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self.url = f"mqtt://{host}:{port}"
        self._broker: Broker | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous authentication: no event/packet loggers, no $SYS publisher.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

    async def __aenter__(self) -> Self:
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        broker = Broker(self._config())
        try:
            await broker.start()
        except BrokerError as exc:
            raise EmbeddedBrokerError(
                f"embedded MQTT broker on {self.host}:{self.port} did not start: {exc}"
            ) from None
        self._broker = broker
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

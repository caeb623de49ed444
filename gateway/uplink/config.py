"""The ``[uplink]`` table of a site config: broker, credentials, TLS, reporting, outbox.

Example (every key but ``broker`` is optional)::

    [uplink]
    broker = "mqtts://fleet.example.net"      # mqtt:// (port 1883) or mqtts:// (TLS, 8883)
    username = "gw-01"
    password_file = "/etc/doorstep/mqtt-password"   # or password = "..."
    ca_file = "/etc/doorstep/fleet-ca.pem"    # default: the system's CAs
    health_interval_s = 30
    batch_interval_s = 1.0
    max_interval_s = 300
    deadband = 0.0
    deadband_by_unit = { V = 1.0, W = 50 }

    [uplink.points."charger-1.current_a"]
    deadband = 0.5

    [uplink.outbox]
    max_rows = 100000
    max_age_s = 604800

Files (``password_file``, ``ca_file``, ``cert_file``, ``key_file``) are read when the gateway
starts; an unreadable one stops it with an :class:`UplinkError` naming the key and the file.
A relative outbox path is relative to the gateway's state directory.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.errors import UplinkError
from gateway.uplink.outbox import Synchronous
from gateway.uplink.reporting import ReportConfig
from gateway.validation import Strict

SCHEMES = {"mqtt": 1883, "mqtts": 8883}


class OutboxConfig(Strict):
    """The ``[uplink.outbox]`` table."""

    #: Relative to the gateway's state directory.
    path: Path = Path("outbox.sqlite")
    max_rows: int = Field(default=100_000, ge=10, le=10_000_000)
    max_age_s: float = Field(default=7 * 86400, gt=0)
    #: ``full``: every append survives a power cut; ``normal``: a ``kill -9`` only.
    synchronous: Synchronous = "full"
    #: batches the broker acknowledged, kept for the fleet to ask for again (gap repair):
    #: at most this many, none older than this (0 rows: none kept)
    keep_sent_rows: int = Field(default=20_000, ge=0, le=10_000_000)
    keep_sent_s: float = Field(default=86400.0, ge=0)


class UplinkConfig(ReportConfig):
    """Connection settings on top of the report-by-exception ones it inherits."""

    #: ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS).
    broker: str
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    #: A file holding the password (one line), instead of ``password``.
    password_file: Path | None = None
    #: CA certificate(s) that verify the broker (mqtts only); default: the system's CAs.
    ca_file: Path | None = None
    #: A client certificate and its key, for brokers that authenticate by certificate.
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Default: the gateway id.
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    keepalive: int = Field(default=30, ge=5, le=3600)
    health_interval_s: float = Field(default=30.0, gt=0, le=3600)
    #: How long a QoS 1 publish may wait for its acknowledgement before reconnecting.
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: QoS 1 publishes in flight at once while draining the outbox.
    window: int = Field(default=32, ge=1, le=1000)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    outbox: OutboxConfig = OutboxConfig()

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"{url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number in 1..65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"{url!r}: put credentials in username and password_file")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: nothing may follow HOST[:PORT]")
        if port == 0:
            raise ValueError(f"{url!r}: the port is not a number in 1..65535")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file: give one of them, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate)")
        if not self.tls and any(f is not None for f in (self.ca_file, self.cert_file)):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// broker")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s {self.reconnect_min_s} is above "
                f"reconnect_max_s {self.reconnect_max_s}"
            )
        return self

    # -- derived -----------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker)
        return parts.port or SCHEMES[parts.scheme]

    def secret(self) -> str | None:
        """The password, from ``password`` or ``password_file`` (its first line)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UplinkError(
                f"uplink.password_file: cannot read {self.password_file} ({exc.strerror})"
            ) from None
        return text.splitlines()[0] if text else ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (None for mqtt://); UplinkError names a file that is unusable."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(f"uplink.ca_file: cannot load {self.ca_file} ({exc})") from None
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise UplinkError(
                    f"uplink.cert_file/key_file: cannot load {self.cert_file} and "
                    f"{self.key_file} ({exc})"
                ) from None
        return ctx

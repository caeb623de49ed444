"""How one fleet manager process is configured: its database, its MQTT broker, and whether it
ingests at all (API tests run without a broker).

No secrets live here: users and their passwords are created with ``fleet user create``, and
session cookies and API tokens are random per issue.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

#: the directory of the default SQLite database; ``$DOORSTEP_FLEET_DIR`` overrides it
DATA_DIR_ENV = "DOORSTEP_FLEET_DIR"
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "doorstep-fleet"


@dataclass(frozen=True)
class Settings:
    """``database_url``: ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB`` (fleet.core.db).
    ``mqtt_url``: an external broker (``mqtt://user:pw@host:port``, ``mqtts://…``); ``None``
    starts the embedded broker on ``mqtt_listen``. ``ingest=False``: no broker, no ingest task.
    """

    database_url: str
    mqtt_url: str | None = None
    mqtt_listen: tuple[str, int] = ("127.0.0.1", 1883)
    ingest: bool = True
    #: the MQTT client id of ingest's persistent session (the broker keeps what arrives while
    #: ingest is away under it); default ``doorstep-fleet-HOSTNAME``
    mqtt_client_id: str | None = None
    #: several workers share the gateways' stream through MQTT shared subscriptions
    #: (``$share/GROUP/…``, fleet.core.broker.shared); None: one plain subscription
    mqtt_share_group: str | None = None
    #: how long a browser login lasts
    session_lifetime: timedelta = timedelta(hours=12)
    #: failed logins in a row, per user name (known or not) and per client address, after
    #: which logging in is refused (429) until ``login_failure_window`` has passed since the
    #: last one; each failure less than the window after the previous one counts on
    login_failures_per_name: int = 5
    login_failures_per_address: int = 20
    login_failure_window: timedelta = timedelta(minutes=5)
    #: argon2 password checks at once (each costs tens of ms of CPU and 64 MiB of memory)
    password_checks: int = 4
    #: what ingest takes from one gateway (fleet.ingest.checks.Limits): a batch number at most
    #: this far beyond the highest stored, times within this window around the fleet's clock,
    #: at most this many devices and points (device, point pairs) per gateway
    ingest_max_sequence_step: int = 1_000_000
    ingest_max_age: timedelta = timedelta(days=3650)
    ingest_max_ahead: timedelta = timedelta(minutes=5)
    ingest_max_devices: int = 1_000
    ingest_max_points: int = 50_000
    #: the web edge (fleet.api.edge): request bodies over this are refused before they are
    #: read; who may read /docs and /openapi.json ("login", "public" or "off"); the proxies
    #: whose X-Forwarded-For/-Proto are believed (addresses; none: the peer is the client)
    max_body_bytes: int = 1024 * 1024
    api_docs: str = "login"
    trusted_proxies: tuple[str, ...] = ()
    #: where uploaded release bundles are kept (default: ``releases/`` beside the default
    #: database, :func:`data_dir`); the URL gateways fetch them from (default: the URL the
    #: operator's request came in on)
    releases_dir: Path | None = None
    public_url: str | None = None
    #: how many days of history are kept per resolution: raw samples, per-minute and per-hour
    #: rollups (fleet.timeseries.retention); on PostgreSQL, how many days ahead the samples'
    #: day partitions are made (fleet.timeseries.partitions)
    retention_raw_days: int = 30
    retention_minute_days: int = 90
    retention_hour_days: int = 1825
    partitions_ahead_days: int = 3
    #: the private key file desired configurations are signed with when they are made
    #: (fleet.config.signing); None: stored unsigned, or signed offline. Never in the database
    config_signing_key: Path | None = None


def default_client_id() -> str:
    return f"doorstep-fleet-{socket.gethostname()}"[:64]


def data_dir() -> Path:
    """The default database's directory: $DOORSTEP_FLEET_DIR or ~/.local/share/doorstep-fleet."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else DEFAULT_DATA_DIR


def default_database_url() -> str:
    """The SQLite file under :func:`data_dir`, creating the directory (0700) and the file
    (0600: it holds password hashes) for the owner alone."""
    directory = data_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    database = directory / "fleet.db"
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))
    database.chmod(0o600)
    return f"sqlite+aiosqlite:///{database}"

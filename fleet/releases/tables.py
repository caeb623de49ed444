"""The releases' tables: uploaded bundles, the OTA commands sent to gateways, and what each
gateway last said about its update (its standing ``ota/status``).

A bundle's bytes live on disk (:mod:`fleet.releases.store`), named by their SHA-256; the
database holds its manifest and where it is. No private key is ever stored: the fleet keeps
the id of the key that signed each release, nothing else of it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base, BigId, utcnow


class Release(Base):
    """A signed bundle uploaded to the fleet."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    platform: Mapped[str] = mapped_column(String(64))
    python: Mapped[str] = mapped_column(String(8))
    min_version: Mapped[str] = mapped_column(String(32))
    firmware: Mapped[str | None] = mapped_column(String(16), default=None)
    key_id: Mapped[str] = mapped_column(String(16))  # the key that signed the manifest
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    manifest: Mapped[dict[str, Any]] = mapped_column()
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_releases_version_platform", "version", "platform", unique=True),)


class OtaCommand(Base):
    """One ``ota/command`` for one gateway; its id is the command id on the wire. The
    gateway's download token is stored as its SHA-256 only."""

    __tablename__ = "ota_commands"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16), default="install")
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    token_digest: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column()  # the command as sent (token blanked)
    # the gateway's last word on this command (from ota/status)
    state: Mapped[str] = mapped_column(String(16), default="sent")
    progress: Mapped[float | None] = mapped_column(Float, default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    status_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_ota_commands_gateway", "gateway_id", "id"),)


class GatewayOta(Base):
    """Each gateway's latest ``ota/status`` as it sent it, and what it runs."""

    __tablename__ = "gateway_ota"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[dict[str, Any]] = mapped_column()
    running_version: Mapped[str] = mapped_column(String(32), default="")
    running_slot: Mapped[str] = mapped_column(String(8), default="")
    running_firmware: Mapped[str | None] = mapped_column(String(16), default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)

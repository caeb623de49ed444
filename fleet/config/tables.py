"""The configuration tables: every version of every gateway's site document, what each
gateway should run and what it reports it runs, and the tags bulk changes select by.

A version is immutable once written: a revert or a bulk change writes a new version (with
the text of the old one, or the merged one), so the history is the audit of what was asked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base, utcnow


class ConfigVersion(Base):
    """Version ``number`` (1, 2, … per gateway) of one gateway's site document."""

    __tablename__ = "config_versions"
    __table_args__ = (UniqueConstraint("gateway_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    comment: Mapped[str] = mapped_column(String(500), default="")
    #: how it came: "push", "revert" (of version N), "bulk"
    origin: Mapped[str] = mapped_column(String(32), default="push")
    #: the validation result: {"problems": [...], "safety": [what it weakens, confirmed],
    #: "signature": "KEYID:BASE64" over gateway.wire.config.signed_statement, "" unsigned}
    validation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    safety_change: Mapped[bool] = mapped_column(Boolean, default=False)


class GatewayConfig(Base):
    """One gateway's desired version, what was sent, and what it reported."""

    __tablename__ = "gateway_configs"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    desired: Mapped[int | None] = mapped_column(Integer, default=None)  # a version number
    #: the desired version last published to the gateway (None: to send, or send again)
    sent: Mapped[int | None] = mapped_column(Integer, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    reported_version: Mapped[int | None] = mapped_column(Integer, default=None)  # None: local
    reported_sha256: Mapped[str] = mapped_column(String(64), default="")
    reported_status: Mapped[str] = mapped_column(String(16), default="")  # "": never reported
    reported_about: Mapped[int | None] = mapped_column(Integer, default=None)
    reported_messages: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"messages": []}
    reported_reason: Mapped[str] = mapped_column(Text, default="")
    reported_at: Mapped[datetime | None] = mapped_column(default=None)


class GatewayTag(Base):
    """A tag on a gateway ("pilot", "north"): bulk changes select gateways by tag."""

    __tablename__ = "gateway_tags"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(48), primary_key=True)

"""The rollouts' table: each rollout's plan and the engine's whole state, as JSON.

The engine (:mod:`fleet.rollouts.engine`) is plain data; the driver loads it, decides and
stores it back in one transaction, so a fleet restart resumes exactly where it was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base, utcnow


class RolloutRecord(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"))
    #: the selection (site, tag, gateways) as given: the target set is resolved at every tick
    selection: Mapped[dict[str, Any]] = mapped_column()
    #: fleet.rollouts.engine.Rollout as JSON (plan, phase, members, status)
    state: Mapped[dict[str, Any]] = mapped_column()
    #: where gateways download the bundle (the fleet's public URL when it was created)
    base_url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="running")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

"""The accounts' tables beyond users, sessions and tokens (fleet.models): the login
throttle's runs of failed logins, shared by every fleet worker."""

from __future__ import annotations

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet.models import Base


class LoginFailures(Base):
    """A run of failed logins (fleet.accounts.login_throttle): of one user name from one
    client address (``kind`` "name"), or from one address whatever the names ("address",
    ``name`` empty). ``last_s``: the wall-clock time (Unix seconds) of the last failure."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_last_s", "last_s"),)

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_s: Mapped[float] = mapped_column(Float)

"""The whole fleet schema: :class:`fleet.models.Base` with every area's tables registered.

``fleet.models`` holds the core tables (sites, gateways, devices, samples, alarms, users,
audit); an area that owns tables of its own keeps them in its package (``tables.py``) on the
same ``Base``, and is imported here, so the migrations' environment and their test see the
schema whole.
"""

from __future__ import annotations

from fleet.accounts import tables as _accounts  # noqa: F401
from fleet.config import tables as _config  # noqa: F401
from fleet.ingest import tables as _ingest  # noqa: F401
from fleet.models import Base
from fleet.releases import tables as _releases  # noqa: F401
from fleet.rollouts import tables as _rollouts  # noqa: F401
from fleet.timeseries import tables as _timeseries  # noqa: F401

__all__ = ["Base"]

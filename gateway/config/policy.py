"""The ``[apply]`` table: how a new site document is proven healthy before it is kept."""

from __future__ import annotations

from pydantic import Field

from gateway.validation import Strict


class ApplyPolicy(Strict):
    """After an apply (or a restart onto a new version), the gateway watches the site for
    ``health_window_s``: healthy, it keeps the new document; unhealthy, it goes back."""

    health_window_s: float = Field(default=30.0, ge=1, le=900)
    #: control cycles the loop may skip in the window before the apply counts as unhealthy
    skipped_cycles_allowed: int = Field(default=0, ge=0, le=100)

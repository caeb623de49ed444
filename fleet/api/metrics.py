"""``GET /metrics``: the fleet process's metrics in Prometheus' text format
(:mod:`fleet.core.metrics`).

It answers whoever may read the API: an API token (any role; give Prometheus a viewer token,
``authorization: {credentials_file: …}`` in its scrape config) or a login. The numbers say
how much each site's gateways send and what was refused, which is not for the internet; a
fleet has a token system already, so there is no separate setting to open it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from fleet.api.deps import ActorDep
from fleet.core.metrics import CONTENT_TYPE, FleetMetrics

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, _actor: ActorDep) -> Response:
    """Ingest's counters and latencies of this process, for Prometheus to scrape."""
    registry: FleetMetrics = request.app.state.ingest.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)

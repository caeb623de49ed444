"""The fleet manager's ASGI application: the REST API, the web UI, and (in its lifespan) the
database, the MQTT broker connection and the ingest task.

The lifespan owns everything it starts: the engine is disposed, the ingest task cancelled
and awaited (it lives in a task group) and the embedded broker shut down when the server
stops. ``app.state`` holds ``settings``, ``sessions`` (an async_sessionmaker), ``ingest``
(fleet.ingest.ingest.Ingest, there with ``Settings.ingest=False`` too, so tests can feed it
directly), ``ingest_ready`` (set once subscribed) and ``outbound``
(:class:`fleet.core.outbound.Outbound`, what the fleet sends to gateways; None without
ingest).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import api, pages
from fleet.api import edge, openapi
from fleet.api import metrics as metrics_api
from fleet.config.delivery import Delivery
from fleet.config.delivery import routes as config_routes
from fleet.core.broker import BrokerUrl, EmbeddedBroker
from fleet.core.broker_check import DropWatch
from fleet.core.db import open_database, sessions
from fleet.core.metrics import FleetMetrics
from fleet.core.outbound import Outbound
from fleet.core.settings import Settings, default_client_id
from fleet.core.singleton import run_singleton
from fleet.ingest.checks import REASONS, Limits
from fleet.ingest.ingest import Ingest, Route
from fleet.ingest.pipeline import run_ingest
from fleet.ingest.repair import GapRepair
from fleet.ingest.repair import report_route as repair_report_route
from fleet.models import User
from fleet.releases.commands import status_route
from fleet.rollouts.driver import RolloutDriver, waking
from fleet.timeseries.jobs import TimeseriesJobs
from gateway import wire

log = logging.getLogger(__name__)


async def _broker_url(settings: Settings, stack: AsyncExitStack) -> BrokerUrl:
    """The external broker's URL, or the embedded broker started on ``stack``."""
    if settings.mqtt_url is not None:
        return BrokerUrl.parse(settings.mqtt_url)
    host, port = settings.mqtt_listen
    broker = await stack.enter_async_context(EmbeddedBroker(host, port))
    log.info("embedded MQTT broker listening on %s", broker.url)
    return BrokerUrl.parse(broker.url)


async def _warn_without_users(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session:
        if await session.scalar(select(User.id).limit(1)) is None:
            log.warning(
                "no users yet: create the first admin with `fleet user create NAME --role admin`"
            )


def _routes(app: FastAPI) -> dict[wire.Kind, Route]:
    """What ingest hands to each area: a kind a gateway publishes → the area's route."""
    return {
        **config_routes(lambda: getattr(app.state, "config_delivery", None)),
        wire.Kind.OTA_STATUS: waking(
            status_route(lambda: app.state.outbound), lambda: getattr(app.state, "rollouts", None)
        ),
        wire.Kind.REPAIR_REPORT: repair_report_route,
    }


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await open_database(settings.database_url)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(engine.dispose)
            app.state.sessions = sessions(engine)
            app.state.ingest = Ingest(
                app.state.sessions,
                routes=_routes(app),
                limits=Limits.from_settings(settings),
                metrics=FleetMetrics(reasons=REASONS),
            )
            app.state.ingest_ready = asyncio.Event()
            app.state.outbound = None
            await _warn_without_users(app.state.sessions)
            if not settings.ingest:
                yield
                return
            broker = await _broker_url(settings, stack)
            client_id = settings.mqtt_client_id or default_client_id()
            app.state.outbound = Outbound(broker, client_id=f"{client_id}-out")
            async with asyncio.TaskGroup() as tasks:
                sending = tasks.create_task(app.state.outbound.run(), name="fleet-outbound")
                app.state.config_delivery = Delivery(app.state.sessions, app.state.outbound)
                delivering = tasks.create_task(app.state.config_delivery.run(), name="config")
                app.state.rollouts = RolloutDriver(app.state.sessions, lambda: app.state.outbound)
                rolling = tasks.create_task(  # in one worker of several (fleet.core.singleton)
                    run_singleton(engine, "rollouts", app.state.rollouts.run), name="rollouts"
                )
                repair = GapRepair(app.state.sessions, lambda: app.state.outbound)
                repairing = tasks.create_task(repair.run(), name="gap-repair")
                app.state.timeseries = TimeseriesJobs.from_settings(app.state.sessions, settings)
                keeping = tasks.create_task(  # partitions, rollups, retention: in one worker
                    run_singleton(engine, "timeseries", app.state.timeseries.run), name="history"
                )
                watch = DropWatch(broker, app.state.ingest.metrics)  # does the broker drop?
                watching = tasks.create_task(watch.run(f"{client_id}-check"), name="broker")
                ingesting = tasks.create_task(
                    run_ingest(
                        app.state.ingest,
                        broker,
                        client_id=client_id,
                        share_group=settings.mqtt_share_group,
                        ready=app.state.ingest_ready,
                    ),
                    name="fleet-ingest",
                )
                try:
                    yield
                finally:
                    ingesting.cancel()
                    sending.cancel()
                    delivering.cancel()
                    rolling.cancel()
                    repairing.cancel()
                    keeping.cancel()
                    watching.cancel()

    app = FastAPI(
        title="Doorstep fleet manager",
        summary="Sites, gateways, telemetry history and alarms of the Doorstep fleet.",
        lifespan=lifespan,
        docs_url=None,  # served by fleet.pages.docs from vendored assets (offline)
        redoc_url=None,
    )
    app.state.settings = settings
    api.install(app)
    edge.install(app, settings)  # body limit, origin checks, security headers, the 422s
    app.include_router(metrics_api.router)  # GET /metrics for Prometheus
    pages.install(app)
    openapi.install(app)  # the errors each operation answers, in the OpenAPI document
    return app

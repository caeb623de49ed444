"""Releases through the fleet: upload a signed bundle, send it to a gateway, serve it with
Range only to that gateway's token, and keep what the gateway says back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet.cli.main import main
from fleet.models import AuditEntry, Role
from fleet.registry import register_gateway
from fleet.releases.commands import command_release, gateway_of
from fleet.releases.store import find_release
from gateway import wire
from gateway.wire.ota import OtaCommand, OtaState, OtaStatus, Running
from tests.fleet.api_client import client, fleet_app, send, user
from tests.gateway.ota.bundles import bundle, wheelhouse

pytestmark = pytest.mark.fleet


async def test_upload_send_serve_with_range_and_status(fleet_db_url: str, tmp_path: Path) -> None:
    path, _ = bundle(tmp_path)
    (tmp_path / "u").mkdir()
    unsigned, _ = bundle(tmp_path / "u", key=None)
    data = path.read_bytes()
    async with fleet_app(fleet_db_url, releases_dir=tmp_path / "store") as app:
        async with app.state.sessions() as session:
            await register_gateway(session, "north", "gw-1")
            await session.commit()
        async with user(app, "op", Role.OPERATOR) as op, user(app, "vi", Role.VIEWER) as vi:
            refused = await op.post("/api/releases", content=unsigned.read_bytes())
            denied = await vi.post("/api/releases", content=data)
            uploaded = await op.post("/api/releases", content=data)
            sent = await op.post("/api/sites/north/gateways/gw-1/ota", json={"version": "0.2.0"})
            missing = await op.post("/api/sites/north/gateways/gw-1/ota", json={"version": "9.0.0"})
        assert refused.status_code == 422
        assert "unsigned" in refused.json()["detail"]
        assert denied.status_code == 403
        assert uploaded.status_code == 201, uploaded.text
        release = uploaded.json()
        assert (release["version"], release["size"]) == ("0.2.0", len(data))
        assert sent.status_code == 201, sent.text
        assert missing.status_code == 404
        # the command's token, as the gateway would get it over MQTT (no broker here)
        async with app.state.sessions() as session:
            gw = await gateway_of(session, "north", "gw-1")
            rel = await find_release(session, "0.2.0", None)
            made = await command_release(session, "test", gw, rel, "http://fleet.test")
            await session.commit()
        payload = wire.decode(OtaCommand, made.payload)
        assert payload.sha256 == release["sha256"]
        url = payload.url.removeprefix("http://fleet.test")
        async with client(app, payload.token) as gateway:
            whole = await gateway.get(url)
            tail = await gateway.get(url, headers={"Range": f"bytes={len(data) - 100}-"})
        async with client(app, "ota_wrong") as stranger:
            forbidden = await stranger.get(url)
        async with client(app) as anonymous:
            anonymous_answer = await anonymous.get(url)
        assert whole.content == data
        assert (tail.status_code, tail.content) == (206, data[-100:])
        assert forbidden.status_code == 403
        assert anonymous_answer.status_code == 401

        status = OtaStatus(
            command=made.row.id,
            release="0.2.0",
            state=OtaState.COMMITTED,
            running=Running(version="0.2.0", slot="b", firmware="1.0"),
            at=time.time(),
        )
        await send(app, "north", "gw-1", status)
        async with user(app, "v2", Role.VIEWER) as viewer:
            shown = (await viewer.get("/api/sites/north/gateways/gw-1/ota")).json()
    assert shown["status"]["running"] == {"version": "0.2.0", "slot": "b", "firmware": "1.0"}
    assert shown["commands"][0]["state"] == "committed"
    assert shown["commands"][1]["state"] == "sent"


def test_cli_keygen_build_sign_upload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "ops.key"
    assert main(["release", "keygen", str(key)]) == 0
    out = tmp_path / "r.tar"
    args = ["release", "build", "--wheelhouse", str(wheelhouse(tmp_path)), "--version", "0.2.0"]
    assert main([*args, "-o", str(out)]) == 0
    assert "unsigned" in capsys.readouterr().out
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    upload = ["release", "upload", str(out), "--db", db, "--releases-dir", str(tmp_path / "s")]
    assert main(upload) == 2
    assert "unsigned" in capsys.readouterr().err
    assert main(["release", "sign", "--key", str(key), str(out)]) == 0
    assert main(upload) == 0
    assert "release 0.2.0" in capsys.readouterr().out
    assert main(["release", "sign", "--key", str(tmp_path / "nope"), str(out)]) == 2
    assert "--key" in capsys.readouterr().err


class Recorded:
    """The fleet's outbound, recording what it would publish."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, wire.Kind, bytes, bool]] = []

    async def send(
        self, site: str, gateway: str, kind: wire.Kind, payload: bytes, *, retain: bool = False
    ) -> bool:
        self.sent.append((site, gateway, kind, payload, retain))
        return True


async def test_a_command_the_gateway_never_got_is_sent_again_and_a_downgrade_is_audited(
    fleet_db_url: str, tmp_path: Path
) -> None:
    path, _ = bundle(tmp_path)
    async with fleet_app(fleet_db_url, releases_dir=tmp_path / "store") as app:
        outbound = Recorded()
        app.state.outbound = outbound
        async with app.state.sessions() as session:
            await register_gateway(session, "north", "gw-1")
            await session.commit()
        async with user(app, "op", Role.OPERATOR) as op:
            assert (await op.post("/api/releases", content=path.read_bytes())).status_code == 201
            sent = await op.post(
                "/api/sites/north/gateways/gw-1/ota", json={"version": "0.2.0", "force": True}
            )
        assert sent.status_code == 201
        [(_, _, kind, first, retained)] = outbound.sent
        assert (kind, retained) == (wire.Kind.OTA_COMMAND, True)
        assert wire.decode(OtaCommand, first).force
        async with app.state.sessions() as session:
            actions = list(await session.scalars(select(AuditEntry.action)))
        assert "ota.downgrade" in actions, actions
        # the gateway comes back saying it knows no command: the fleet sends it again
        running = Running(version="0.1.0", slot="a")
        idle = OtaStatus(state=OtaState.IDLE, running=running, at=time.time())
        await send(app, "north", "gw-1", idle)
        assert len(outbound.sent) == 2
        again = wire.decode(OtaCommand, outbound.sent[1][3])
        assert again.id == sent.json()["id"]
        assert again.token != wire.decode(OtaCommand, first).token  # a fresh token
        # once it reports on that command, nothing more is sent
        done = OtaStatus(
            command=again.id, release="0.2.0", state=OtaState.COMMITTED, running=running,
            at=time.time(),
        )  # fmt: skip
        await send(app, "north", "gw-1", done)
        await send(app, "north", "gw-1", idle)
        assert len(outbound.sent) == 2

"""A download survives the network: cut at 80 %, it resumes from there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.backoff import Backoff
from gateway.errors import OtaError
from gateway.ota.download import check_space, download
from tests.gateway.ota.serving import Served, serve

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


async def test_a_cut_download_resumes_from_where_it_stopped(tmp_path: Path) -> None:
    seen: list[int] = []
    with serve(Served(DATA, cut_at=0.8)) as served:
        path, transfer = await download(
            served.url, "tok", len(DATA), SHA, tmp_path,
            progress=seen.append, backoff=Backoff(0.01, 0.05),
        )  # fmt: skip
    assert path.read_bytes() == DATA
    assert served.ranges == [None, f"bytes={int(len(DATA) * 0.8)}-"]
    assert served.sent == [int(len(DATA) * 0.8), len(DATA) - int(len(DATA) * 0.8)]
    assert transfer.received == len(DATA), "nothing fetched twice"
    assert transfer.resumed_from == int(len(DATA) * 0.8)
    assert seen[-1] == len(DATA)


async def test_a_part_left_by_a_killed_gateway_is_resumed(tmp_path: Path) -> None:
    (tmp_path / f"{SHA}.part").write_bytes(DATA[:1000])
    with serve(Served(DATA)) as served:
        _, transfer = await download(served.url, "tok", len(DATA), SHA, tmp_path)
    assert served.ranges == ["bytes=1000-"]
    assert transfer.received == len(DATA) - 1000


async def test_refusals_and_a_wrong_hash_are_said(tmp_path: Path) -> None:
    with (
        serve(Served(DATA, token="other")) as served,
        pytest.raises(OtaError, match=r"refused the download.*403"),
    ):
        await download(served.url, "tok", len(DATA), SHA, tmp_path)
    with (
        serve(Served(DATA)) as served,
        pytest.raises(OtaError, match=r"SHA-256 is .* the command said"),
    ):
        await download(served.url, "tok", len(DATA), "0" * 64, tmp_path)
    assert not os.listdir(tmp_path), "a wrong download is discarded"
    with pytest.raises(OtaError, match="failed 2 times in a row"):
        await download(
            "http://127.0.0.1:9/none", "", 10, SHA, tmp_path, attempts=2,
            backoff=Backoff(0.01, 0.01),
        )  # fmt: skip
    with pytest.raises(OtaError, match="not enough disk space"):
        check_space(tmp_path, 2**60)

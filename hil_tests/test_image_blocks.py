"""The process image hears the real gateway's polls one block at a time."""

from __future__ import annotations

import pytest

from gateway.image import Sample
from hil_tests.gateway_rig import running, site_config, tcp_bus

pytestmark = pytest.mark.hil

Update = tuple[str, str, Sample]


async def test_each_polled_block_reaches_batch_listeners_as_one_list_in_update_order() -> None:
    config = site_config(tcp_bus("lan"), [("charger-tcp", "EVSE-HEC", "lan", 1)])
    async with running(config) as rig:
        each: list[Update] = []
        batches: list[list[Update]] = []
        rig.gw.image.subscribe(lambda d, p, s: each.append((d, p, s)))
        rig.gw.image.subscribe_batch(batches.append)
        await rig.wait_for(lambda: len(batches) >= 5, what="five polled blocks")
        heard = [u for batch in batches for u in batch]
        assert each[: len(heard)] == heard
        assert any(len(batch) > 1 for batch in batches)  # a block of several points: one call

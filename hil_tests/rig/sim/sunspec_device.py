"""A SunSpec device's register space: the "SunS" marker, each model's ID and length, the
data of the profile's points, and the end model — laid out at a configurable base and in a
configurable model order, so tests can prove the gateway finds the chain by walking it."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.devices import sunspec
from gateway.devices.profile import Point, Range, Table, load_profile
from hil_tests.rig.registers import RegisterMap, SimulatedUnit


class SunSpecUnit(SimulatedUnit):
    def __init__(self, model: str, unit_id: int, models: Sequence[int], base: int) -> None:
        profile = load_profile(model)
        self.starts = sunspec.layout(models, base)
        end = sunspec.end_address(models, base)
        regs = RegisterMap(spans={Table.HOLDING: (base, end + 1)})
        super().__init__(profile, regs, unit_id)
        regs.put(Table.HOLDING, base, list(sunspec.MARKER))
        for model_id, start in self.starts.items():
            regs.put(Table.HOLDING, start, [model_id, sunspec.MODEL_LENGTHS[model_id]])
        regs.put(Table.HOLDING, end, [sunspec.END_MODEL_ID, 0])
        self.base = base

    def place(self, point: Point) -> Point:
        assert point.sunspec_model is not None
        assert point.offset is not None
        address = self.starts[point.sunspec_model] + point.offset
        return point.model_copy(update={"address": address, "sunspec_model": None, "offset": None})

    def unreadable_model(self, model_id: int) -> Range:
        """The address range of one model (for exception-02 injection in tests)."""
        start = self.starts[model_id]
        return Range(
            table=Table.HOLDING, start=start, end=start + 1 + sunspec.MODEL_LENGTHS[model_id]
        )

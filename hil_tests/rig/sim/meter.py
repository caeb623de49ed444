"""The site meter at the grid connection (SunSpec model 203, docs/devices.md#sunspec-meter).

It sums the site: a base load plus every source (chargers draw, PV generates as a negative
contribution). W > 0 is import from the grid, W < 0 export. Energy counters accumulate in
the direction of the flow. A test set on its current inputs (:meth:`SiteMeter.inject`, as an
electrician's secondary-injection test) makes it measure a chosen power instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hil_tests.rig.sim.sunspec_device import SunSpecUnit

METER_MODELS = (1, 203)
VOLTS = 230.0
#: scale factors chosen, like a real meter, so a carport at full load fits an int16
A_SF, W_SF = -1, 1


class SiteMeter(SunSpecUnit):
    def __init__(
        self,
        unit_id: int,
        sources: Sequence[Callable[[], float]] = (),
        *,
        base_load_w: float = 3000.0,
        models: Sequence[int] = METER_MODELS,
        base: int = 40000,
    ) -> None:
        super().__init__("SUNSPEC-METER", unit_id, models, base)
        self.sources = list(sources)
        self.base_load_w = base_load_w
        self.w = 0.0
        self.import_wh = 0.0
        self.export_wh = 0.0
        #: what a test set on the CT inputs makes the meter measure (W), or None
        self.injected_w: float | None = None
        self._now: float | None = None
        for name, value in {
            "mn": "Doorstep-Sim",
            "md": "MTR-3P",
            "sn": "SIM-M1",
            "vr": "1.0.0",
            "da": unit_id,
            "a_sf": A_SF,
            "v_sf": -1,
            "hz_sf": -2,
            "w_sf": W_SF,
            "totwh_sf": 0,
        }.items():
            self.set(name, value)

    def inject(self, w: float | None) -> None:
        """Secondary injection: the meter measures ``w`` (W, + import) instead of the site,
        and counts energy from it, until ``inject(None)`` takes the test set off."""
        self.injected_w = w

    def advance(self, now: float) -> None:
        if self._now is None:
            self._now = now
        dt, self._now = max(0.0, now - self._now), now
        self.w = self.base_load_w + sum(source() for source in self.sources)
        if self.injected_w is not None:
            self.w = self.injected_w
        if self.w >= 0:
            self.import_wh += self.w * dt / 3600
        else:
            self.export_wh += -self.w * dt / 3600
        phase_w = self.w / 3
        phase_a = phase_w / VOLTS
        for name, value, sf in (
            ("a", phase_a * 3, A_SF),
            ("apha", phase_a, A_SF),
            ("aphb", phase_a, A_SF),
            ("aphc", phase_a, A_SF),
            ("phv", VOLTS, -1),
            ("phvpha", VOLTS, -1),
            ("phvphb", VOLTS, -1),
            ("phvphc", VOLTS, -1),
            ("hz", 50.0, -2),
            ("w", self.w, W_SF),
            ("wpha", phase_w, W_SF),
            ("wphb", phase_w, W_SF),
            ("wphc", phase_w, W_SF),
            ("totwhimp", int(self.import_wh), 0),
            ("totwhexp", int(self.export_wh), 0),
        ):
            self.set(name, value, sf)

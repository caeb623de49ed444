"""A device that answers again: the alarms held under its comm-loss alarm clear under it, and
none of them stands on its own, not even for the moment between the device's first answer
and the read of the interlock's inputs (a flash of major alarms in the fleet's list)."""

from __future__ import annotations

from gateway.control.alarms import AlarmEvent
from gateway.image import Quality
from tests.gateway.control.standard.test_comm_loss import healthy, run, site


def test_alarms_suppressed_under_a_comm_loss_never_stand_alone_while_it_recovers() -> None:
    clock, image, engine = site()
    run(clock, engine, 1.0)
    image.mark_device("lift", Quality.OFFLINE)
    run(clock, engine, 10.0)
    held = {k for k, e in engine.alarms.active.items() if e.suppressed_by == "comm-loss/lift"}
    assert "elevator-safety-lift/unavailable" in held
    events: list[AlarmEvent] = []
    engine.alarms.listeners.append(events.append)
    image.update("lift", "fault_bitmap", 0)  # its first answer: one block read, not the rest
    run(clock, engine, 0.5)
    healthy(image)  # the next reads
    run(clock, engine, 1.0)
    assert not [
        e.key for e in events if e.suppressed_by is None and e.kind != "cleared" and e.key in held
    ]
    assert held.isdisjoint(engine.alarms.active)
    assert "comm-loss/lift" not in engine.alarms.active

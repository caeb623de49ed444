"""The process image's notifications: per update, and per polled block."""

from __future__ import annotations

from gateway.image import ProcessImage, Quality, Sample

Update = tuple[str, str, Sample]


def listened() -> tuple[ProcessImage, list[Update], list[list[Update]]]:
    image = ProcessImage(clock=lambda: 5.0)
    for point in ("a", "b", "c"):
        image.declare("m", point, 10.0)
    each: list[Update] = []
    batches: list[list[Update]] = []
    image.subscribe(lambda d, p, s: each.append((d, p, s)))
    image.subscribe_batch(batches.append)
    return image, each, batches


def test_a_block_is_heard_once_by_batch_listeners_and_per_update_by_the_others() -> None:
    image, each, batches = listened()
    with image.block():
        image.update("m", "a", 1, at=1.0)
        image.update("m", "b", 2, at=1.0)
        image.mark("m", "c", Quality.BAD, at=1.0)
        assert len(each) == 3  # the control loop's wake-up does not wait for the block's end
        assert batches == []
    assert batches == [each]
    assert [(p, s.value, s.quality) for _, p, s in batches[0]] == [
        ("a", 1, Quality.GOOD),
        ("b", 2, Quality.GOOD),
        ("c", None, Quality.BAD),
    ]


def test_an_update_outside_a_block_is_a_batch_of_one_and_an_empty_block_is_not_heard() -> None:
    image, each, batches = listened()
    image.update("m", "a", 7, at=2.0)
    with image.block():
        image.mark("m", "a", Quality.GOOD)  # no change of quality: no update
    assert batches == [[("m", "a", Sample(7, 2.0, Quality.GOOD))]]
    assert each == batches[0]


def test_nested_blocks_and_mark_device_are_heard_as_one_batch() -> None:
    image, each, batches = listened()
    with image.block():
        image.update("m", "a", 1, at=1.0)
        image.mark_device("m", Quality.BAD, at=2.0)
    assert len(batches) == 1
    assert [(p, s.quality) for _, p, s in batches[0]] == [
        ("a", Quality.GOOD),
        ("a", Quality.BAD),
        ("b", Quality.BAD),
        ("c", Quality.BAD),
    ]
    image.mark_device("m", Quality.OFFLINE, at=3.0)
    assert len(batches) == 2
    assert len(batches[1]) == 3
    assert each == batches[0] + batches[1]


def test_a_device_is_offline_from_its_mark_until_it_answers_but_not_before_its_first_read() -> None:
    image = ProcessImage(clock=lambda: 10.0)
    image.declare("lift", "speed", stale_after_s=1.0)
    assert not image.offline("lift")  # not read yet is not "stopped answering"
    image.mark_device("lift", Quality.OFFLINE)
    assert image.offline("lift")
    assert image.get("lift", "speed").quality is Quality.OFFLINE
    image.update("lift", "speed", 0.5)
    assert not image.offline("lift")
    image.mark_device("lift", Quality.OFFLINE)
    image.mark_device("lift", Quality.BAD)
    assert not image.offline("lift")

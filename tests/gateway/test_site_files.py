"""Hostile site files: `gateway check` refuses what is not a site file with one clear line
and exit 2, never a traceback, a hang or running out of memory; the loader, fed arbitrary
text and bytes, answers a site or a ConfigError and nothing else."""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.errors import ConfigError
from gateway.site import MAX_DEVICES, MAX_SITE_BYTES, load_site, parse_site

EXAMPLE = resources.files("gateway.examples").joinpath("community.toml").read_text()


def _check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return captured.out


def test_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "site.toml"
    os.mkfifo(fifo)
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(_check(fifo, capsys)), daemon=True)
    worker.start()
    worker.join(10)
    assert done, "gateway check hung on a FIFO"
    assert "not a regular file (a FIFO or device)" in done[0]


def test_a_device_and_a_directory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "not a regular file (a FIFO or device)" in _check("/dev/zero", capsys)
    assert "not a regular file (a directory)" in _check(tmp_path, capsys)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "site.toml"
    with big.open("wb") as file:
        file.truncate(4 * 1024**3)  # 4 GiB, sparse: reading it would take the memory
    assert f"a site file is at most {MAX_SITE_BYTES} bytes" in _check(big, capsys)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "line 1: a NUL byte: this is not a text"),
        ("[gateway]\nsite = 'x'\n".encode("utf-16"), "UTF-16 text: save the file as UTF-8"),
        (b'[gateway]\nsite = "caf\xe9"\n', "line 2: not UTF-8 text"),
        (b"x = " + b"[" * 100_000, "nested 100000 deep; at most 32"),
        (b"x = " + b"{a = " * 5_000, "nested 5000 deep"),
    ],
)
def test_binary_undecodable_and_deep_files_get_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, said: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(content)
    out = _check(path, capsys)
    assert said in out
    assert "1 problem(s)" in out.replace(" \n", " ")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_nan_and_infinities_are_not_finite_numbers(value: str) -> None:
    text = EXAMPLE.replace("safety = 0.5", f"safety = {value}", 1)
    with pytest.raises(ConfigError) as refused:
        parse_site(text, "site.toml")
    assert refused.value.problems == [f"poll.safety: {float(value)} is not a finite number"]


def test_a_site_with_too_many_devices_names_the_limit() -> None:
    extra = "".join(
        f'\n[[devices]]\nname = "d-{i}"\nprofile = "ELV-24476"\nbus = "x"\nunit_id = 1\n'
        for i in range(MAX_DEVICES + 1)
    )
    with pytest.raises(ConfigError) as refused:
        parse_site(EXAMPLE + extra, "site.toml")
    assert refused.value.problems == [
        f"devices: {MAX_DEVICES + 12} devices; a site has at most {MAX_DEVICES}"
    ]


def test_a_device_is_named_by_its_name_not_its_index(tmp_path: Path) -> None:
    text = EXAMPLE.replace("unit_id = 1\n", "unit_id = 300\n", 1)
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_site(path)
    [problem] = refused.value.problems
    assert problem.startswith("devices["), problem
    assert not problem.startswith("devices[0]"), problem
    assert ".unit_id: 300 is outside 1..247" in problem


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("site-fuzz")


def _load(data: bytes, directory: Path) -> None:
    path = directory / "site.toml"
    path.write_bytes(data)
    try:
        load_site(path)
    except ConfigError as refused:
        problems = refused.problems
        text = str(refused)
    else:
        return
    assert problems
    assert all(isinstance(p, str) and p for p in problems)
    text.encode()  # printable as it is


_FRAGMENTS = st.sampled_from(
    ["[", "]", "{", "}", "=", "nan", "inf", '"', "'", "\n", "[[devices]]", "name = ", "1e999",
     "[gateway]", "site = ", "\\u", "\x00", "#", "devices", "[poll]", "safety = "]
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        st.lists(_FRAGMENTS, max_size=60).map(lambda parts: "".join(parts).encode()),
        st.integers(0, len(EXAMPLE)).map(lambda cut: EXAMPLE[:cut].encode()),
    )
)
def test_the_site_loader_answers_a_site_or_a_config_error(fuzz_dir: Path, data: bytes) -> None:
    _load(data, fuzz_dir)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("unit_id = 1\n", 'unit_id = "1"\n', ".unit_id: "),
        ("safety = 0.5", 'safety = "0.5"', "poll.safety: "),
    ],
)
def test_a_string_is_not_silently_taken_for_a_number(old: str, new: str, key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_site(EXAMPLE.replace(old, new, 1), "site.toml")
    [problem] = refused.value.problems
    assert key in problem
    assert "valid" in problem  # "Input should be a valid integer/number"


def test_a_standard_interlock_is_named_by_its_table() -> None:
    text = EXAMPLE.replace("trip_c = 80", "trip_c = 50", 1)
    with pytest.raises(ConfigError) as refused:
        parse_site(text, "site.toml")
    assert refused.value.problems == [
        "safety.charger_temperature: trip_c 50 must be above warn_c 60"
    ]

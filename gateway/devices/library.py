"""The profiles a site can use: the shipped ones and the site's own.

A site adds device models without touching the installed software: a ``[[profiles]]`` table in
the site document itself is a profile (it travels with the document, also when the fleet
pushes it), every ``*.toml`` in the directories its config names under ``profile_dirs`` is
one, and a device whose model is nowhere else is looked up as ``MODEL.toml`` next to the site
file. A site profile may not
silently replace a shipped model: it says ``overrides = true`` or takes another model name.
Every file is read like any input a person hands us: a regular file, at most
:data:`MAX_PROFILE_BYTES`, UTF-8, and its file name is its model (``KEBA-P30.toml`` holds
``model = "KEBA-P30"``), so the model a device names is the file a technician opens.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.devices.profile import (
    Profile,
    available_models,
    build_profile,
    load_profile,
    parse_profile,
)
from gateway.errors import ProfileError

#: A profile larger than this is not a register map (the biggest shipped one is ~15 kB).
MAX_PROFILE_BYTES = 512 * 1024


def read_profile_file(path: Path) -> Profile:
    """One profile file, checked strictly; :class:`ProfileError` names the file and the key."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ProfileError(f"{path}: not a regular file")
    if info.st_size > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{path}: {info.st_size} bytes; a profile is at most {MAX_PROFILE_BYTES} bytes"
        )
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_profile(text, str(path))


@dataclass
class ProfileLibrary:
    """Model name → profile for one site: its own profiles in front of the shipped ones."""

    site: dict[str, Profile] = field(default_factory=dict)
    #: model → the file it came from, for messages
    files: dict[str, Path] = field(default_factory=dict)
    #: problems found while loading (each names its file); ``gateway check`` lists them
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        dirs: Sequence[Path] = (),
        *,
        beside: Path | None = None,
        wanted: Iterable[str] = (),
        inline: Sequence[object] = (),
    ) -> ProfileLibrary:
        """The ``inline`` profiles (tables of the site document), every profile in ``dirs``,
        then ``MODEL.toml`` in ``beside`` for each wanted model found nowhere else. Never
        raises: what cannot be used is in ``problems``."""
        lib = cls()
        for i, data in enumerate(inline):
            try:
                profile = build_profile(data, f"profiles[{i}]")
            except ProfileError as exc:
                lib.problems.append(str(exc))
                continue
            lib._accept(profile, Path(f"profiles[{i}]"), f"profiles[{i}]")
        for i, folder in enumerate(dirs):
            where = f"profile_dirs[{i}]"
            if not folder.is_dir():
                lib.problems.append(f"{where}: {folder} is not a directory")
                continue
            for path in sorted(folder.glob("*.toml")):
                lib._add(path, where)
        if beside is not None:
            for model in dict.fromkeys(wanted):
                path = beside / f"{model}.toml"
                if model not in lib.site and model not in lib.files and path.is_file():
                    lib._add(path, "profile next to the site file")
        return lib

    def _add(self, path: Path, where: str) -> None:
        try:
            profile = read_profile_file(path)
        except ProfileError as exc:
            self.problems.append(f"{where}: {exc}")
            return
        if profile.model != path.stem:
            self.problems.append(
                f"{where}: {path}: model {profile.model!r} must match its file name "
                f"({path.stem}.toml)"
            )
            return
        self._accept(profile, path, f"{where}: {path}")

    def _accept(self, profile: Profile, path: Path, where: str) -> None:
        """Add a profile unless it clashes with one already known."""
        if profile.model in self.site:
            self.problems.append(
                f"{where}: model {profile.model} is already defined by {self.files[profile.model]}"
            )
            return
        shipped = profile.model in available_models()
        if shipped and not profile.overrides:
            self.problems.append(
                f"{where}: model {profile.model} is a shipped profile; give the site's "
                "own a different model name, or say 'overrides = true' to replace it"
            )
            return
        if profile.overrides and not shipped:
            self.problems.append(
                f"{where}: 'overrides = true' but no shipped profile {profile.model} "
                "exists to override (remove the key)"
            )
            return
        self.site[profile.model] = profile
        self.files[profile.model] = path

    def get(self, model: str) -> Profile:
        """The profile of a model: the site's own first, then the shipped one."""
        if model in self.site:
            return self.site[model]
        if model not in available_models():
            raise ProfileError(
                f"unknown device profile {model!r}; known profiles: {', '.join(self.models())}"
            )
        return load_profile(model)  # a broken shipped file says what is wrong with it

    def models(self) -> list[str]:
        return sorted({*available_models(), *self.site})

    def origin(self, model: str) -> str:
        """Where a model's profile comes from, as a person reads it."""
        if model in self.files:
            return str(self.files[model])
        return f"shipped profiles/{model}.toml"

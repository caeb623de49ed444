"""A document checked in the fleet exactly as ``gateway check`` checks it, and the changes
that weaken a standard interlock named before anyone confirms them.

:func:`validate` runs the gateway's own validator (:func:`gateway.site.parse_site`: schema,
profiles, references between sections) and adds one check of its own: the document must be
for the gateway it is pushed to (``[gateway] site`` and ``id``); :func:`fixed_keys` refuses
what only the gateway itself changes (``[uplink]``, ``control.period_ms``). Its messages are the
gateway's, key first (``safety.export_limit.limit_ww: unknown key …``).

:func:`weakening` compares the ``[safety]`` tables of two documents: a standard interlock
dropped (or the whole table), a limit raised (export, feeder, charger current and
temperatures), a timeout lengthened (fire recall, trapped passenger), a scope narrowed to
fewer devices. Each is said in a line a person reads.
"""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.site import SiteConfig, parse_site

#: (interlock, key): a larger value is a weaker interlock
LOOSER_WHEN_LARGER: tuple[tuple[str, str], ...] = (
    ("export_limit", "limit_w"),
    ("feeder_limit", "limit_a"),
    ("feeder_limit", "charger_max_a"),
    ("fire_alarm", "recall_timeout_s"),
    ("charger_temperature", "warn_c"),
    ("charger_temperature", "trip_c"),
    ("charger_temperature", "resume_c"),
    ("trapped_passenger", "occupied_s"),
    ("trapped_passenger", "confirm_s"),
)


def validate(
    text: str, source: str, site: str, gateway: str
) -> tuple[SiteConfig | None, list[str]]:
    """The parsed site and no problems, or None and every problem (key first)."""
    try:
        parsed = parse_site(text, source)
    except ConfigError as exc:
        return None, exc.problems
    if (parsed.gateway.site, parsed.gateway.id) != (site, gateway):
        return None, [
            f"gateway: the document is for {parsed.gateway.site}/{parsed.gateway.id}, "
            f"not {site}/{gateway} (its [gateway] site and id)"
        ]
    return parsed, []


def fixed_keys(old_site: SiteConfig | None, new_site: SiteConfig) -> list[str]:
    """What ``new_site`` changes that is changed on the gateway itself, never from the fleet
    (compared with the desired version it replaces; nothing to compare with the first one,
    which the gateway itself checks against what it runs)."""
    if old_site is None:
        return []
    out = []
    if new_site.uplink != old_site.uplink:
        out.append(
            "uplink: [uplink] is changed on the gateway itself: a wrong broker address or "
            "credential would cut the gateway off from the fleet, and no rollback could reach it"
        )
    if new_site.control.period_ms != old_site.control.period_ms:
        out.append(
            f"control.period_ms: {new_site.control.period_ms:g} (desired now: "
            f"{old_site.control.period_ms:g}) is changed on the gateway itself: the control "
            "loop keeps its period while it runs, so a new period needs a restart there"
        )
    return out


def weakening(old_site: SiteConfig | None, new_site: SiteConfig) -> list[str]:
    """How ``new_site`` weakens the standard interlocks of ``old_site`` (empty: it does not);
    defaults count as the values they stand for."""
    if old_site is None:
        return []
    old, new = old_site.safety, new_site.safety
    out = []
    for name in type(old).model_fields:
        was, now = getattr(old, name), getattr(new, name)
        if was is None:
            continue
        if now is None:
            out.append(f"safety.{name}: removed (the standard interlock no longer runs)")
            continue
        for interlock, key in LOOSER_WHEN_LARGER:
            if interlock == name and float(getattr(now, key)) > float(getattr(was, key)):
                out.append(
                    f"safety.{name}.{key}: raised from {getattr(was, key):g} "
                    f"to {getattr(now, key):g}"
                )
        if now.devices is not None and (
            was.devices is None or not set(now.devices) >= set(was.devices)
        ):
            out.append(f"safety.{name}.devices: narrowed to {', '.join(now.devices) or 'none'}")
    return out

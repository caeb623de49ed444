"""Desired configuration on the wire: what the fleet wants a gateway to run, the gateway asking
for it, and what the gateway reports it runs.

``config/desired`` (fleet → gateway, retained, QoS 1): the gateway's desired site document
(the whole TOML text), its ``version`` (numbered per gateway by the fleet) and its SHA-256.
A gateway acts on a (version, hash) once; a copy it sees again changes nothing.

A fleet with a signing key signs each version (:func:`signed_statement`: the gateway's
site and id, the version, the document's hash and the document itself), so a signed document
cannot be replayed as another version or to another gateway; a gateway that trusts a key
refuses an unsigned or wrongly signed one (``signature``, ``KEYID:BASE64``, see
:mod:`gateway.trust`).

``config/request`` (gateway → fleet, QoS 1, not retained): sent after every (re)connect — "this
is what I run; send me my desired version". The fleet answers on ``config/desired``, so a
broker without retained messages, a restarted fleet or a gateway offline for a week all
converge without relying on a retained copy.

``config/reported`` (gateway → fleet, the gateway's standing report, retained): the version
and hash it runs (``version`` null: a document edited on the gateway itself, a *local*
version), the ``status`` of the last desired version it was given (``applied``, ``pending``
while it applies and watches the health window, ``rejected`` with the validator's
``messages``, ``rolled back`` with the ``reason``), and which version that status is about.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field

from gateway.wire import Payload

MAX_DOCUMENT = 200 * 1024  # characters; a site document is a few KiB
Sha256 = str

Status = Literal["applied", "pending", "rejected", "rolled back"]


def document_hash(text: str) -> str:
    """The SHA-256 of a site document as UTF-8: what both sides compare."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


STATEMENT_HEADER = "doorstep desired configuration v1"


def signed_statement(site: str, gateway: str, version: int, document: str) -> bytes:
    """The exact bytes a configuration signature covers: which gateway, which version, the
    document's hash, then the document (UTF-8). Built the same way by the fleet (or the
    operator's machine) that signs and by the gateway that checks, each from its own
    knowledge: the gateway puts in its own site and id."""
    head = (
        f"{STATEMENT_HEADER}\ngateway {site}/{gateway}\nversion {version}\n"
        f"sha256 {document_hash(document)}\n\n"
    )
    return head.encode("utf-8") + document.encode("utf-8")


class DesiredConfig(Payload):
    """The site document the fleet wants this gateway to run."""

    version: int = Field(ge=1)
    sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")
    document: str = Field(max_length=MAX_DOCUMENT)
    #: the version weakens a standard interlock (confirmed by an operator in the fleet): the
    #: gateway raises an info event when it applies it
    safety_change: bool = False
    #: ``KEYID:BASE64`` over :func:`signed_statement` ("": unsigned)
    signature: str = Field(default="", max_length=200)
    at: float


class ConfigRequest(Payload):
    """After every (re)connect: what the gateway runs; the fleet answers with the desired one."""

    version: int | None = Field(default=None, ge=1)  # None: a local document (or none yet)
    sha256: Sha256 = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    at: float


class ReportedConfig(Payload):
    """What the gateway runs, and how the last desired version it was given went."""

    version: int | None = Field(default=None, ge=1)  # running; None: a local document
    sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")
    status: Status
    #: the desired version the status is about (None: no desired version given yet)
    about: int | None = Field(default=None, ge=1)
    messages: list[str] = Field(default_factory=list, max_length=200)
    reason: str = Field(default="", max_length=2000)
    at: float

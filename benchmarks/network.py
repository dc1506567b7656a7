"""Network profiles: the emulated links in front of the registries, and the floor a link sets.

A :class:`Profile` is a named set-up from :data:`harness.netem.PROFILES` (``loopback``: direct; ``wan``: the source
at 40 ms RTT and 200 Mbit/s, the mirror at 2 ms and 2 Gbit/s) with the workload scale it runs at; :func:`linked`
puts a :class:`~harness.netem.LinkEmulator` in front of a registry when the profile has a link for it.

:func:`link_floor` is the least time any copier needs over the links: every unique byte through the slowest link
(the source's in ``wan``), plus the round trips of the longest dependency chain of the workload, each of which
must wait for the one before it (:func:`dependency_chain`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.netem import PROFILES

if TYPE_CHECKING:
    from harness.netem import LinkEmulator
    from harness.registry import RegistryServer

Role = Literal["source", "mirror"]
ROLES: tuple[Role, ...] = ("source", "mirror")


class Link(BaseModel):
    """An emulated network path to one registry: round-trip time (s) and bandwidth (bit/s, per direction)."""

    model_config = ConfigDict(frozen=True)

    rtt_s: float = Field(ge=0)
    bandwidth_bps: float = Field(gt=0)

    def __str__(self) -> str:
        bw = self.bandwidth_bps
        rate = f"{bw / 1e9:g} Gbit/s" if bw >= 1e9 else f"{bw / 1e6:g} Mbit/s"
        return f"{self.rtt_s * 1000:g} ms RTT, {rate}"


class Profile(BaseModel):
    """A network set-up: a link in front of the source and/or the mirror (None: direct), and the workload scale."""

    model_config = ConfigDict(frozen=True)

    name: str
    scale: float | None = None
    source: Link | None = None
    mirror: Link | None = None

    @property
    def linked(self) -> bool:
        return self.source is not None or self.mirror is not None

    def link(self, role: Role) -> Link | None:
        return self.source if role == "source" else self.mirror

    def __str__(self) -> str:
        parts = [f"{role} {link}" for role, link in (("source", self.source), ("mirror", self.mirror)) if link]
        return f"{self.name} (scale {self.scale or 1:g}; {'; '.join(parts) or 'no emulation'})"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # "1.2.3" matches the patterns below
        return None


def parse_rtt(text: str) -> float:
    """Seconds from ``40ms``, ``0.04s`` or ``0.04`` (seconds)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e-?[0-9]+)?)\s*(ms|s)?\s*", text.lower())
    value = _number(match.group(1)) if match else None
    if match is None or value is None:
        raise argparse.ArgumentTypeError(f"not a round-trip time: {text!r} (e.g. 40ms, 0.04s)")
    return value / (1000 if match.group(2) == "ms" else 1)


def parse_bandwidth(text: str) -> float:
    """Bits per second from ``200Mbit``, ``2Gbit``, ``500kbit`` or ``200e6``."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmg]?)(?:bit(?:/s)?|bps)?\s*", text.lower())
    value = _number(match.group(1)) if match else None
    if match is None or value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"not a bandwidth: {text!r} (e.g. 200Mbit, 2Gbit, 200e6)")
    return value * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def make_profiles(
    names: Sequence[str],
    scale: float,
    link_scale: float,
    source: tuple[float | None, float | None] = (None, None),
    mirror: tuple[float | None, float | None] = (None, None),
) -> list[Profile]:
    """Profiles by name from :data:`harness.netem.PROFILES`, links overridden by ``(rtt, bandwidth)`` pairs.

    A profile without links (``loopback``) uses ``scale``; a profile with links uses ``link_scale``.
    """
    out = []
    for name in names:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        links: dict[str, Link | None] = {}
        for role, (rtt, bandwidth) in (("source", source), ("mirror", mirror)):
            default = PROFILES[name].get(role)
            links[role] = (
                None
                if default is None
                else Link(rtt_s=default[0] if rtt is None else rtt, bandwidth_bps=bandwidth or default[1])
            )
        linked_ = any(links.values())
        out.append(Profile(name=name, scale=link_scale if linked_ else scale, **links))
    return out


@contextmanager
def linked(server: RegistryServer, link: Link | None, name: str) -> Iterator[tuple[str, LinkEmulator | None]]:
    """The address tools use for ``server``: its own, or a :class:`LinkEmulator`'s in front of it."""
    if link is None:
        yield server.host, None
        return
    from harness.netem import LinkEmulator

    with LinkEmulator(server.host, rtt=link.rtt_s, bandwidth_bps=link.bandwidth_bps, name=name) as emulator:
        yield emulator.host, emulator


# --------------------------------------------------------------------------- the link floor


class ChainStep(BaseModel):
    """One step of the dependency chain: ``round_trips`` on the ``role``'s link, ``seconds`` in all."""

    step: str
    role: Role
    round_trips: int
    seconds: float


class LinkFloor(BaseModel):
    """Unique bytes through the slowest link, plus the chain's round trips (nothing faster is possible)."""

    unique_bytes: int
    bottleneck: Role
    bottleneck_bps: float
    transfer_seconds: float
    chain: list[ChainStep]
    chain_seconds: float
    seconds: float

    def describe(self) -> str:
        steps = " + ".join(f"{s.step} {s.seconds * 1000:.0f} ms" for s in self.chain if s.round_trips)
        return (
            f"link floor {self.seconds:.2f} s = {self.unique_bytes / 2**20:.1f} MiB through the {self.bottleneck} "
            f"link ({self.bottleneck_bps / 1e6:g} Mbit/s: {self.transfer_seconds:.2f} s) + {steps}"
        )


def dependency_chain(index: bool, token: bool = False) -> list[tuple[str, Role, int]]:
    """``(step, role, round trips)`` of the longest chain of requests that must follow one another.

    For the deepest image of a workload: a token (only when the registries ask for one: the harness's are
    anonymous), the tagged manifest, the index children (when it is an index), a blob's ``GET`` (request to first
    byte) and its upload's commit (last byte to ``201``), the children's ``PUT`` (index only), the tag's ``PUT``.
    The upload session's ``POST`` can go out while the source is read, so it is not on the chain.
    """
    steps: list[tuple[str, Role, int]] = [
        ("token", "source", 1 if token else 0),
        ("manifest", "source", 1),
        ("children", "source", 1 if index else 0),
        ("blob GET", "source", 1),
        ("blob PUT", "mirror", 1),
        ("manifest PUT", "mirror", 1 if index else 0),
        ("tag", "mirror", 1),
    ]
    return [s for s in steps if s[2]]


def link_floor(profile: Profile, unique_bytes: int, *, index: bool, token: bool = False) -> LinkFloor | None:
    """The profile's :class:`LinkFloor` for a workload (``index``: its deepest image is an index); None: no links."""
    links: dict[Role, Link] = {role: link for role in ROLES if (link := profile.link(role)) is not None}
    if not links:
        return None
    bottleneck: Role = min(links, key=lambda role: links[role].bandwidth_bps)
    bps = links[bottleneck].bandwidth_bps
    chain = []
    for step, role, trips in dependency_chain(index, token):
        link = links.get(role)
        chain.append(ChainStep(step=step, role=role, round_trips=trips, seconds=trips * (link.rtt_s if link else 0)))
    transfer = unique_bytes * 8 / bps
    chain_seconds = sum(s.seconds for s in chain)
    return LinkFloor(
        unique_bytes=unique_bytes,
        bottleneck=bottleneck,
        bottleneck_bps=bps,
        transfer_seconds=round(transfer, 6),
        chain=chain,
        chain_seconds=round(chain_seconds, 6),
        seconds=round(transfer + chain_seconds, 6),
    )

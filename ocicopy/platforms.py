"""Platform selectors (``os/arch[/variant]``), matching against index entries, and what a selection of an index
yields (one child, or a subset index). Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ocicopy.errors import InvalidPlatformError, ManifestError
from ocicopy.models import Descriptor, Manifest, Platform, compact_manifest

_PART: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: An entry without a variant means the architecture's default one (as containerd's platform matcher does).
_DEFAULT_VARIANT: Final = {"arm64": "v8", "arm": "v7"}


def _variant(architecture: str, variant: str | None) -> str | None:
    return variant or _DEFAULT_VARIANT.get(architecture)


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """What the caller asked for; ``variant=None`` matches any variant."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, platform: Platform | None) -> bool:
        if platform is None:
            return False
        if (platform.os, platform.architecture) != (self.os, self.architecture):
            return False
        if self.variant is None:
            return True
        return _variant(platform.architecture, platform.variant) == _variant(self.architecture, self.variant)


def parse_platform(text: str) -> PlatformSpec:
    """Parse ``linux/amd64`` or ``linux/arm64/v8``; lower-case, 2 or 3 parts."""
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise InvalidPlatformError(text)
    for part in parts:
        if not _PART.fullmatch(part):
            raise InvalidPlatformError(text, f"bad component {part!r} (lower-case letters, digits, . _ -)")
    return PlatformSpec(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def select_platforms(index: Manifest, specs: Sequence[PlatformSpec]) -> list[Descriptor]:
    """The index entries matching ``specs``, one per spec, in index order; an error names what is missing."""
    chosen: list[Descriptor] = []
    for spec in specs:
        match = next((d for d in index.children() if spec.matches(d.platform)), None)
        if match is None:
            available = ", ".join(sorted({str(d.platform) for d in index.children() if d.platform})) or "none"
            raise ManifestError(f"no manifest for platform {spec} in the index (available: {available})")
        if match not in chosen:
            chosen.append(match)
    order = {d.digest: i for i, d in enumerate(index.children())}
    return sorted(chosen, key=lambda d: order[d.digest])


def config_platform(config: bytes) -> Platform | None:
    """The platform an image config declares (``os``, ``architecture``, ``variant``); None when it declares none
    (an artifact's config, or no image config at all)."""
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("os"), str) or not isinstance(doc.get("architecture"), str):
        return None
    variant = doc.get("variant")
    return Platform(
        os=doc["os"], architecture=doc["architecture"], variant=variant if isinstance(variant, str) else None
    )


def check_image_platform(platform: Platform | None, specs: Sequence[PlatformSpec]) -> None:
    """A single image matches a platform selection only if its config says so; else a :class:`ManifestError`."""
    if specs and not any(spec.matches(platform) for spec in specs):
        asked = ", ".join(str(s) for s in specs)
        what = f"a single {platform} image" if platform is not None else "a single image whose config names no platform"
        raise ManifestError(f"the source is {what}, not {asked}: nothing copied")


def apply_selection(top: Manifest, specs: Sequence[PlatformSpec]) -> Manifest | Descriptor:
    """What a platform selection of ``top`` yields, without I/O: ``top`` itself (no selection, not an index,
    or every platform), a subset index (several platforms), or the descriptor of one child (the specs, one or
    several such as ``linux/arm64`` and ``linux/arm64/v8``, select one child).

    For a single image the caller checks its config first (:func:`check_image_platform`)."""
    if not specs or not top.is_index:
        return top
    chosen = select_platforms(top, specs)
    if len(chosen) == 1:
        return chosen[0]
    if len(chosen) == len(top.children()):
        return top
    return subset_index(top, chosen)


def subset_index(index: Manifest, keep: Sequence[Descriptor]) -> Manifest:
    """A new index listing only ``keep`` (a transformation: the digest changes; serialised compactly)."""
    doc = json.loads(index.raw)
    wanted = {d.digest for d in keep}
    doc["manifests"] = [m for m in doc["manifests"] if m.get("digest") in wanted]
    return compact_manifest(doc, index.media_type)

"""Platform selectors (``os/arch[/variant]``) and matching against index entries. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ocicopy.errors import InvalidPlatformError
from ocicopy.models import Platform

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

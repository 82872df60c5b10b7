"""The training data profile a model version was registered with, which drift and data
expectations are measured against."""

from __future__ import annotations

from contracts.common import NotFound
from contracts.registry import GetReferenceProfile, GetVersion, ReferenceProfile, RegistryService

__all__ = ["reference_profile"]


async def reference_profile(
    registry: RegistryService, ref: str, *, needed_for: str
) -> tuple[str, int, ReferenceProfile]:
    """The name and version ``ref`` resolves to, and that version's reference profile;
    ``NotFound`` when it has none, saying what it was ``needed_for``."""
    info = await registry.get_version(GetVersion(ref=ref))
    try:
        profile = await registry.get_reference_profile(
            GetReferenceProfile(ref=f"{info.name}:{info.version}")
        )
    except NotFound:
        raise NotFound(
            f"{info.name}:{info.version} has no reference profile: {needed_for}",
            details={"model": info.name, "version": info.version},
        ) from None
    return info.name, info.version, profile

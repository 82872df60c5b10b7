"""The features module's own settings: ``QUARRY_FEATURES_*``, or ``[features]`` in
``quarry.toml``."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.kernel.module_settings import Alias

__all__ = ["FeaturesSettings"]

_STORE_URL = msgspec.Meta(
    pattern=r"^(redis|rediss|sqlite|postgresql)://",
    description="a redis://, sqlite:/// or postgresql:// URL",
)


class FeaturesSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the online store lives and how far ahead a pushed row may be stamped."""

    online_store_url: Annotated[str, _STORE_URL, Alias("QUARRY_ONLINE_STORE_URL")] | None = None
    """QUARRY_FEATURES_ONLINE_STORE_URL (or QUARRY_ONLINE_STORE_URL): the online store,
    ``redis://...`` or a SQL URL (default: the features database)."""
    future_tolerance_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    """QUARRY_FEATURES_FUTURE_TOLERANCE_S: how far ahead of now a pushed event may be stamped."""

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
    source_roots: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_ROOTS")] = ()
    """QUARRY_FEATURES_SOURCE_ROOTS (or QUARRY_SOURCE_ROOTS): comma-separated folders a view's
    Parquet or CSV source may read from (default: the data directory only), and
    ``s3://bucket/prefix`` entries an ``s3://`` source may read from (none by default); a
    relative source path is taken from the first folder. Historical outputs go under them too."""
    source_databases: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_DATABASES")] = ()
    """QUARRY_FEATURES_SOURCE_DATABASES (or QUARRY_SOURCE_DATABASES): comma-separated
    ``postgresql://`` URLs a view's source may read, each optionally named ``name=URL`` (a source
    names one by name or by its exact URL); none by default."""
    schedule_check_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """QUARRY_FEATURES_SCHEDULE_CHECK_S: how often scheduled materializations are looked for."""

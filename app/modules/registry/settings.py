"""The registry's own settings: ``QUARRY_REGISTRY_*``, or ``[registry]`` in ``quarry.toml``.

The artifact store (``QUARRY_ARTIFACTS_URL``) and the tensor size bound
(``QUARRY_MAX_TENSOR_BYTES``) stay kernel settings: inference reads them too (its artifact cache
and its load-time check), and one module never reads another's settings.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.kernel.module_settings import Alias

__all__ = ["RegistrySettings"]


class RegistrySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the registry's public routes."""

    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1), Alias("QUARRY_MAX_UPLOAD_BYTES")] = (
        1024 << 20
    )
    """QUARRY_REGISTRY_MAX_UPLOAD_BYTES (or QUARRY_MAX_UPLOAD_BYTES): largest model upload (413
    above it). Applied by every process serving the registry's routes, hosted or remote."""

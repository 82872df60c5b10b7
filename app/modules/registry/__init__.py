"""The registry module: model versions, their ONNX artifacts, aliases and lineage.

Its whole public surface is :data:`module`; everything else in this package is private.
"""

from app.kernel.module import ModuleSpec
from app.modules.registry.api import routes
from app.modules.registry.service import build
from app.modules.registry.settings import RegistrySettings
from contracts.registry import VERSION, ModelAliasChanged, ModelVersionRegistered, RegistryService

__all__ = ["module"]

module = ModuleSpec(
    name="registry",
    provides=RegistryService,
    contract_version=VERSION,
    build=build,
    routes=routes,
    publishes=(ModelVersionRegistered, ModelAliasChanged),
    migrations="registry",
    settings=RegistrySettings,
)
"""The registry's declaration for the composition root."""

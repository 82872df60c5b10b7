"""OpenAPI schema generation for contract Structs.

litestar's own Struct plugin tests ``default not in {NODEFAULT, UNSET}``, which breaks on the
``= {}`` and ``= []`` defaults contract Structs use; this one compares by identity.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.plugins.core._msgspec import kwarg_definition_from_field
from litestar.types.empty import Empty
from litestar.typing import FieldDefinition

__all__ = ["StructDefaultsSchemaPlugin"]


class StructDefaultsSchemaPlugin(StructSchemaPlugin):
    """Schemas for msgspec Structs whose defaults may be mutable containers."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Any:
        """Describe one Struct as a component schema."""
        hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
        info: Any = msgspec.inspect.type_info(field_definition.type_)
        properties = {}
        for field in info.fields:
            kwarg = kwarg_definition_from_field(field)[0]
            unset = field.default is msgspec.NODEFAULT or field.default is msgspec.UNSET
            properties[field.encode_name] = FieldDefinition.from_annotation(
                annotation=hints[field.name],
                name=field.encode_name,
                default=Empty if unset else field.default,
                **({"kwarg_definition": kwarg} if kwarg else {}),
            )
        required = sorted(f.encode_name for f in info.fields if self._is_field_required(field=f))
        return schema_creator.create_component_schema(
            field_definition, required=required, property_fields=properties
        )

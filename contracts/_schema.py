"""Schema snapshots of the contracts and the compatibility rules between two snapshots.

``python -m contracts._schema`` rewrites ``contracts/schemas/<module>.json``. A test compares the
live contracts with the snapshots: a change that breaks msgspec's evolution rules (a removed
struct, method or field, a changed type, a new required field) fails unless the major version
was raised; a compatible addition needs a fresh snapshot. A field whose type stays but whose
numeric bounds change (``msgspec.Meta(ge=..., le=...)``) needs the minor version raised: a
tightened bound refuses values the old contract let through, which a caller should be able to
tell from the version.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec

from contracts.common import method_info

CONTRACT_MODULES = ("registry", "features", "inference", "training", "monitoring", "notifications")
"""Every contract module with a snapshot."""

SCHEMA_DIR = Path(__file__).with_name("schemas")

_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


def _structs(module: Any) -> list[type]:
    return [
        value
        for name in getattr(module, "__all__", ())
        if isinstance(value := getattr(module, name), type) and issubclass(value, msgspec.Struct)
    ]


def _service(module: Any) -> type | None:
    for name in getattr(module, "__all__", ()):
        value = getattr(module, name)
        if isinstance(value, type) and name.endswith("Service"):
            return value
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def snapshot(name: str) -> dict[str, Any]:
    """The snapshot of ``contracts.<name>``: version, methods and every Struct's JSON schema."""
    module = importlib.import_module(f"contracts.{name}")
    _, components = msgspec.json.schema_components(_structs(module))
    methods: dict[str, Any] = {}
    service = _service(module)
    for method_name, fn in vars(service).items() if service else ():
        info = method_info(fn) if callable(fn) else None
        if info is None:
            continue
        hints = typing.get_type_hints(fn, globalns=vars(module))
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        methods[method_name] = {
            "request": _type_name(hints[params[0]]) if params else None,
            "answer": repr(hints.get("return")).replace("contracts.", ""),
            **msgspec.to_builtins(info),
        }
    return {"version": list(module.VERSION), "methods": methods, "components": components}


def problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Incompatibilities between two snapshots (empty when ``new`` can read ``old``'s traffic)."""
    if new["version"][0] != old["version"][0]:
        return []
    found: list[str] = []
    minor_raised = new["version"][1] > old["version"][1]
    for method, spec in old["methods"].items():
        if method not in new["methods"]:
            found.append(f"method {method} was removed")
        elif new["methods"][method] != spec:
            found.append(f"method {method} changed: {spec} -> {new['methods'][method]}")
    for struct, schema in old["components"].items():
        current = new["components"].get(struct)
        if current is None:
            found.append(f"struct {struct} was removed")
            continue
        found.extend(_field_problems(struct, schema, current, minor_raised=minor_raised))
    return found


def _field_problems(
    struct: str, old: dict[str, Any], new: dict[str, Any], *, minor_raised: bool
) -> list[str]:
    found = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for field, schema in old_props.items():
        if field not in new_props:
            found.append(f"{struct}.{field} was removed")
        elif new_props[field] == schema:
            continue
        elif _widened(schema, new_props[field]):
            if not minor_raised:
                found.append(f"{struct}.{field} allows new values (raise the minor version)")
        elif _unbounded(new_props[field]) != _unbounded(schema):
            found.append(f"{struct}.{field} changed type")
        elif not minor_raised:
            found.append(f"{struct}.{field} changed its bounds (raise the minor version)")
    added_required = set(new.get("required", ())) - set(old.get("required", ()))
    found.extend(
        f"{struct}.{field} is new and required (give it a default)"
        for field in sorted(added_required)
    )
    if old.get("tag") != new.get("tag"):
        found.append(f"{struct} changed its tag")
    return found


def _widened(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` with values added to its enum (a ``Literal`` that gained
    members): it reads everything ``old`` did, and callers learn of the new values from the
    minor version."""
    if not isinstance(old, dict) or not isinstance(new, dict) or "enum" not in old:
        return False
    rest = {k: v for k, v in old.items() if k != "enum"}
    return (
        "enum" in new
        and {k: v for k, v in new.items() if k != "enum"} == rest
        and set(old["enum"]) < set(new["enum"])
    )


def _unbounded(schema: Any) -> Any:
    """``schema`` without its numeric bounds, at every depth."""
    if isinstance(schema, dict):
        return {k: _unbounded(v) for k, v in schema.items() if k not in _BOUNDS}
    if isinstance(schema, list):
        return [_unbounded(v) for v in schema]
    return schema


def write_snapshots() -> None:
    """Rewrite every snapshot file from the live contracts."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name in CONTRACT_MODULES:
        path = SCHEMA_DIR / f"{name}.json"
        path.write_text(json.dumps(snapshot(name), indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    write_snapshots()

"""Settings a module owns: a frozen msgspec Struct named in its ``ModuleSpec.settings``.

A module ``m`` declares its knobs as a ``msgspec.Struct`` (``frozen=True, kw_only=True``) whose
fields carry their bounds (``Annotated[int, msgspec.Meta(ge=1)]``) and an attribute docstring.
Each field ``f`` is read from ``QUARRY_<M>_<F>`` (or the one older name an :class:`Alias` gives it),
then from the ``[m]`` table of ``quarry.toml``, then its default. Strings are converted with
``msgspec.convert(..., strict=False)``; a bad value raises :class:`ConfigError` naming the variable
(or the table key) and what it accepts, and a key the table does not know is an error naming it.

The kernel knows no module by name: the composition root hands :func:`configure_modules` the
modules of its build, which checks every name the configuration mentions against them and loads
each module's settings into :attr:`Settings.module_settings`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from app.kernel.settings import ConfigError, Settings

__all__ = ["Alias", "configure_modules", "load_module_settings", "variables"]

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class Alias:
    """The older environment variable a module setting also answers to, e.g.
    ``Annotated[int, Meta(ge=1), Alias("QUARRY_MAX_BATCH_SIZE")]``. ``QUARRY_<M>_<F>`` wins when
    both are set."""

    variable: str


def variables(module: str, kind: type[msgspec.Struct]) -> dict[str, tuple[str, ...]]:
    """Each field of ``kind`` and the environment variables it is read from, preferred first."""
    found: dict[str, tuple[str, ...]] = {}
    for info in msgspec.structs.fields(kind):
        aliases = [a.variable for a in _extras(info.type) if isinstance(a, Alias)]
        found[info.name] = (f"QUARRY_{module.upper()}_{info.name.upper()}", *aliases)
    return found


def load_module_settings(
    module: str, kind: type[S], environ: Mapping[str, str], table: Mapping[str, Any]
) -> S:
    """Module ``module``'s settings: ``environ``, then its ``quarry.toml`` ``table``, then defaults.

    Raises :class:`ConfigError` naming the variable or key of a bad value, or the unknown keys
    of ``table``.
    """
    fields = {info.name: info for info in msgspec.structs.fields(kind)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in the [{module}] table of quarry.toml: {', '.join(unknown)}"
            f" (known: {', '.join(fields)})"
        )
    values: dict[str, Any] = {}
    for name, names in variables(module, kind).items():
        variable = next((v for v in names if v in environ), None)
        if variable is not None:
            values[name] = _convert(fields[name].type, environ[variable], variable)
        elif name in table:
            source = f"quarry.toml [{module}] {name}"
            values[name] = _convert(fields[name].type, table[name], source)
    return kind(**values)


def configure_modules(
    settings: Settings,
    modules: Mapping[str, type[msgspec.Struct] | None],
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """``settings`` checked against ``modules`` (name -> settings Struct, in this build) and with
    every module's settings loaded; settings already given (:meth:`Settings.with_module`) stay.
    ``overrides`` (module -> field -> value, as a command sets them) beat every other source.

    Raises :class:`ConfigError` for a module name nothing in ``modules`` answers to (in
    ``QUARRY_MODULES``, ``QUARRY_REMOTE_<M>``, ``QUARRY_<M>_DATABASE_URL`` or a ``quarry.toml``
    table) and for a bad module setting.
    """
    _check_names(settings, modules)
    loaded = dict(settings.module_settings)
    for name, kind in modules.items():
        if kind is not None and kind not in loaded:
            table = settings.module_tables.get(name, {})
            loaded[kind] = load_module_settings(name, kind, settings.module_environ, table)
    for name, changes in (overrides or {}).items():
        kind = modules.get(name)
        if kind is None:
            raise ConfigError(f"module {name!r} has no settings to override")
        loaded[kind] = _override(name, loaded[kind], changes)
    return replace(settings, module_settings=loaded)


def _override(module: str, current: Any, changes: Mapping[str, Any]) -> Any:
    fields = {info.name: info for info in msgspec.structs.fields(current)}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"module {module} has no setting(s) {', '.join(unknown)}")
    values = {k: _convert(fields[k].type, v, f"{module}.{k}") for k, v in changes.items()}
    return msgspec.structs.replace(current, **values)


def _check_names(settings: Settings, modules: Mapping[str, type[msgspec.Struct] | None]) -> None:
    known = ", ".join(modules)
    if settings.modules is not None and any(m not in modules for m in settings.modules):
        raise ConfigError(
            f"QUARRY_MODULES={','.join(settings.modules)!r} is not valid: expected 'all', 'none'"
            f" or a comma-separated subset of {known}"
        )
    named = [(f"QUARRY_REMOTE_{m.upper()}", m) for m in settings.remotes]
    named += [(f"QUARRY_{m.upper()}_DATABASE_URL", m) for m in settings.database_urls]
    for variable, module in named:
        if module not in modules:
            raise ConfigError(f"{variable}: unknown module {module!r} (known: {known})")
    for table in settings.module_tables:
        if modules.get(table) is None:
            with_settings = ", ".join(m for m, kind in modules.items() if kind is not None)
            raise ConfigError(
                f"unknown setting(s) in quarry.toml: [{table}] (module tables: {with_settings})"
            )


# --- conversion -----------------------------------------------------------------------------


def _convert(annotation: Any, raw: Any, source: str) -> Any:
    value = raw
    if isinstance(raw, str):
        value = _from_text(annotation, raw)
    try:
        return msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError:
        raise ConfigError(
            f"{source}={raw!r} is not valid: expected {_accepts(annotation)}"
        ) from None


def _from_text(annotation: Any, text: str) -> Any:
    base = _base(annotation)
    if typing.get_origin(base) in (tuple, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    if base is bool:
        lowered = text.strip().lower()
        truth = {"1": True, "true": True, "yes": True, "on": True}
        falsity = {"0": False, "false": False, "no": False, "off": False}
        return {**truth, **falsity}.get(lowered, text)
    return text.strip()


def _accepts(annotation: Any) -> str:
    """What a value of ``annotation`` may be, in words (``a positive integer``, ``one of a, b``)."""
    meta = _meta(annotation)
    if meta.get("description"):
        return str(meta["description"])
    base = _base(annotation)
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    if base is bool:
        return "true or false"
    if typing.get_origin(base) in (tuple, list):
        return "a comma-separated list"
    if base in (int, float):
        return _number(base, meta)
    return "a string"


def _number(base: type, meta: Mapping[str, Any]) -> str:
    word = "integer" if base is int else "number"
    noun = f"an {word}" if base is int else f"a {word}"
    low = meta.get("ge", meta.get("gt"))
    high = meta.get("le", meta.get("lt"))
    if low is not None and high is not None:
        return f"{noun} between {low:g} and {high:g}"
    if meta.get("gt") == 0 or (meta.get("ge", 0) >= 1 and base is int):
        return f"a positive {word}"
    if meta.get("ge") == 0:
        return f"a positive {word} or 0"
    if low is not None:
        return f"{noun} of at least {low:g}"
    return noun


def _parts(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``annotation`` without ``None`` and ``Annotated``: its base type and the extras."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _parts(rest[0])
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        inner, more = _parts(base)
        return inner, (*extras, *more)
    return annotation, ()


def _base(annotation: Any) -> Any:
    return _parts(annotation)[0]


def _extras(annotation: Any) -> Iterable[Any]:
    return _parts(annotation)[1]


def _meta(annotation: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for extra in _extras(annotation):
        if isinstance(extra, msgspec.Meta):
            for key in ("ge", "gt", "le", "lt", "description"):
                if getattr(extra, key) is not None:
                    merged[key] = getattr(extra, key)
    return merged

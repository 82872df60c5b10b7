"""Checks on a deployment that need no registry: routes, fallbacks, sticky keys, cache limits."""

from __future__ import annotations

import math

from contracts.common import InvalidInput, ModelRef
from contracts.inference import Deployment, Fallback

__all__ = ["check_spec"]


def check_spec(deployment: Deployment) -> list[str]:
    """Check what needs no registry; answers the references that must resolve."""
    if not deployment.routes:
        raise InvalidInput("a deployment needs at least one route", details={"field": "routes"})
    for route in deployment.routes:
        if not (math.isfinite(route.weight) and route.weight > 0):
            raise InvalidInput(
                f"route {route.model!r}: weight must be a positive number",
                details={"field": "routes", "model": route.model},
            )
    refs = [r.model for r in deployment.routes] + list(deployment.shadows)
    refs += _fallback_refs(deployment.fallbacks)
    for field_name in ("sticky_header", "sticky_input"):
        if getattr(deployment, field_name) == "":
            raise InvalidInput(f"{field_name} must not be empty", details={"field": field_name})
    if not (math.isfinite(deployment.cache_ttl_s) and deployment.cache_ttl_s >= 0):
        raise InvalidInput("cache_ttl_s must be 0 or more", details={"field": "cache_ttl_s"})
    if deployment.cache_max_entries < 1:
        raise InvalidInput(
            "cache_max_entries must be at least 1", details={"field": "cache_max_entries"}
        )
    for ref in refs:
        ModelRef.parse(ref)
    return refs


def _fallback_refs(fallbacks: list[Fallback]) -> list[str]:
    refs = []
    for fallback in fallbacks:
        if fallback.kind == "model" and not fallback.model:
            raise InvalidInput("a model fallback needs a model", details={"field": "fallbacks"})
        if fallback.kind == "default" and not fallback.outputs:
            raise InvalidInput("a default fallback needs outputs", details={"field": "fallbacks"})
        if fallback.model:
            refs.append(fallback.model)
    return refs

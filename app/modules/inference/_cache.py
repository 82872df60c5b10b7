"""The per-deployment response cache: recent answers keyed by model version and request digest."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from contracts.inference import Deployment, Predict, Prediction

__all__ = ["CacheKey", "ResponseCache", "digest"]

CacheKey = tuple[tuple[str, int], str]
"""The served (name, version) and the digest of the request."""


@dataclass
class ResponseCache:
    """Least-recently-used answers per deployment, each kept for the deployment's TTL."""

    caches: dict[str, OrderedDict[CacheKey, tuple[float, Prediction]]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def get(self, name: str, key: CacheKey) -> Prediction | None:
        cache = self.caches.get(name)
        entry = cache.get(key) if cache is not None else None
        if cache is None or entry is None:
            return None
        expires, answer = entry
        if expires < time.monotonic():
            del cache[key]
            return None
        cache.move_to_end(key)
        self.hits[name] = self.hits.get(name, 0) + 1
        return answer

    def put(self, deployment: Deployment, key: CacheKey, answer: Prediction) -> None:
        cache = self.caches.setdefault(deployment.name, OrderedDict())
        cache[key] = (time.monotonic() + deployment.cache_ttl_s, answer)
        cache.move_to_end(key)
        while len(cache) > deployment.cache_max_entries:
            cache.popitem(last=False)

    def drop(self, name: str) -> None:
        self.caches.pop(name, None)


def digest(request: Predict) -> str:
    """A hash of everything in the request that can change the answer."""
    hasher = hashlib.sha256()
    hasher.update(msgspec.json.encode([sorted(request.outputs), request.coerce]))
    for name in sorted(request.inputs):
        tensor = request.inputs[name]
        hasher.update(msgspec.json.encode([name, tensor.dtype, list(tensor.shape)]))
        hasher.update(hashlib.sha256(tensor.data).digest())
    return hasher.hexdigest()

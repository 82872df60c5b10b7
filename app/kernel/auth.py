"""API keys with scopes: the hashed key file, and who a request acts as (:class:`Principal`).

A key reads ``qk_<id>_<secret>``: ``id`` is 12 hex characters and names the key in listings and
logs; only ``sha256(secret)`` is stored. The keys file is TOML, written atomically (temporary file,
fsync, rename; mode 0600) under an exclusive lock file, so two ``quarry keys`` commands running at
once never lose a key. Verification is on every request's path: the parsed file is cached and read
again only when its size, mtime or inode change, looked at no more than once a second.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from app.kernel.settings import ConfigError
from contracts.common import InvalidInput, NotFound, PermissionDenied, Scope

__all__ = [
    "ALL_SCOPES",
    "ANONYMOUS_PRINCIPAL",
    "SERVICE_PRINCIPAL",
    "KeyInfo",
    "KeyStore",
    "Principal",
    "check_scope",
    "parse_scopes",
    "verify_service_token",
]

ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)
"""Every scope; ``admin`` alone already covers the others."""

_log = logging.getLogger("quarry.auth")
_KEY_PREFIX = "qk_"
_ID_LENGTH = 12
_HASH_PREFIX = "sha256:"
_MAX_NAME = 200


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request acts as: an API key, the service (module to module) or anonymous."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this principal may use ``scope`` (``admin`` covers every scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes


SERVICE_PRINCIPAL = Principal(key_id="service", name="service", scopes=ALL_SCOPES)
"""Modules calling each other with ``QUARRY_SERVICE_TOKEN``: every scope."""

ANONYMOUS_PRINCIPAL = Principal(key_id="anonymous", name="anonymous", scopes=ALL_SCOPES)
"""Requests without a key where none is needed (auth off, or an open path): every scope."""


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What is known about a key besides its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked: bool = False


def parse_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Validate scope names (a comma-separated string is accepted too), in canonical order.

    Raises :class:`InvalidInput` naming the valid scopes for an unknown name or an empty list.
    """
    names = scopes.split(",") if isinstance(scopes, str) else builtins.list(scopes)
    wanted = {str(name).strip() for name in names} - {""}
    unknown = sorted(wanted - ALL_SCOPES)
    valid = ", ".join(s.value for s in Scope)
    if unknown or not wanted:
        problem = f"unknown scope(s) {', '.join(map(repr, unknown))}" if unknown else "no scope"
        raise InvalidInput(
            f"{problem}: valid scopes are {valid}",
            details={"field": "scopes", "unknown": unknown, "valid": [s.value for s in Scope]},
        )
    return tuple(s.value for s in Scope if s.value in wanted)


def check_scope(principal: Principal, needed: str) -> None:
    """Raise :class:`PermissionDenied` unless ``principal`` may use scope ``needed``.

    The message and details name the scope as users write it (``'read'``), also when ``needed``
    is a :class:`~contracts.common.Scope` member, whose ``repr`` is ``<Scope.READ: 'read'>``.
    """
    name = str(needed)  # a StrEnum's str() is its value
    if not principal.allows(name):
        raise PermissionDenied(
            f"this operation needs an API key with scope {name!r}",
            details={"needed_scope": name, "key_id": principal.key_id},
        )


def verify_service_token(presented: str, expected: str | None) -> bool:
    """Constant-time comparison with ``QUARRY_SERVICE_TOKEN`` (never true when none is set)."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


class _StoredKey(msgspec.Struct, kw_only=True):
    id: str
    name: str
    scopes: builtins.list[str]
    created_at: datetime
    revoked: bool = False
    hash: str


class _KeyFile(msgspec.Struct, kw_only=True):
    keys: builtins.list[_StoredKey] = msgspec.field(default_factory=builtins.list)


class _Snapshot(msgspec.Struct, frozen=True):
    signature: tuple[int, int, int] | None
    keys: Mapping[str, _StoredKey]
    principals: Mapping[str, Principal]


_EMPTY = _Snapshot(None, {}, {})
_NO_MATCH = _HASH_PREFIX + "0" * 64
_MAX_VERIFIED = 4096
"""Valid keys remembered with their principal (the cache starts over when it is full)."""


class KeyStore:
    """API keys kept as hashes in a TOML file (``QUARRY_API_KEYS_FILE``).

    Constructing one does no I/O; a missing file holds no keys. ``clock`` and ``recheck_s`` decide
    how often :meth:`verify` looks at the file for changes made by another process.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._clock = clock
        self._recheck_s = recheck_s
        self._snapshot = _EMPTY
        self._loaded = False
        self._checked_at = 0.0
        self._verified: dict[str, tuple[_Snapshot, Principal]] = {}
        """Keys found valid, by the snapshot of the file that said so: one hash per key and
        file version instead of one per request."""

    def create(self, name: str, scopes: Iterable[str]) -> tuple[KeyInfo, str]:
        """Create a key; answer its info and the full key, which is shown only this once."""
        clean_name = _validate_name(name)
        clean_scopes = parse_scopes(scopes)
        with self._locked() as keys:
            key_id = secrets.token_hex(_ID_LENGTH // 2)
            while key_id in keys:
                key_id = secrets.token_hex(_ID_LENGTH // 2)
            secret = secrets.token_urlsafe(32)
            stored = _StoredKey(
                id=key_id,
                name=clean_name,
                scopes=builtins.list(clean_scopes),
                created_at=datetime.now(UTC).replace(microsecond=0),
                hash=_hash(secret),
            )
            keys[key_id] = stored
        return _info(stored), f"{_KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (revoking twice is harmless); :class:`NotFound` for an unknown id."""
        with self._locked() as keys:
            stored = keys.get(key_id)
            if stored is None:
                raise NotFound(f"no API key with id {key_id!r}", details={"key_id": key_id})
            stored.revoked = True
        return _info(stored)

    def list(self) -> builtins.list[KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        keys = self._read_strict().values()
        return sorted((_info(k) for k in keys), key=lambda k: (k.created_at, k.id))

    def verify(self, token: str) -> Principal | None:
        """The principal of a presented key; ``None`` when it is malformed, unknown or revoked.

        A key already found valid against the file as it is now is answered from memory; a
        change to the file (a revocation) is seen within ``recheck_s``, as for any key.
        """
        remembered = self._verified.get(token)
        if remembered is not None and remembered[0] is self._current():
            return remembered[1]
        if len(token) <= len(_KEY_PREFIX) + _ID_LENGTH + 1 or not token.startswith(_KEY_PREFIX):
            return None
        key_id = token[len(_KEY_PREFIX) : len(_KEY_PREFIX) + _ID_LENGTH]
        if token[len(_KEY_PREFIX) + _ID_LENGTH] != "_":
            return None
        snapshot = self._current()
        stored = snapshot.keys.get(key_id)
        presented = _hash(token[len(_KEY_PREFIX) + _ID_LENGTH + 1 :])
        expected = stored.hash if stored is not None else _NO_MATCH
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        principal = snapshot.principals.get(key_id)
        if principal is not None:
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified = {}
            self._verified[token] = (snapshot, principal)
        return principal

    # --- the file ---------------------------------------------------------------------------

    def _current(self) -> _Snapshot:
        now = self._clock()
        if self._loaded and now - self._checked_at < self._recheck_s:
            return self._snapshot
        self._checked_at = now
        signature = self._signature()
        if self._loaded and signature == self._snapshot.signature:
            return self._snapshot
        try:
            self._remember(self._load(signature))
        except ConfigError:
            if not self._loaded:
                raise
            _log.exception("keeping the API keys read before; the file is not readable now")
        return self._snapshot

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, signature: tuple[int, int, int] | None) -> _Snapshot:
        keys = self._read_strict()
        principals = {
            k.id: Principal(key_id=k.id, name=k.name, scopes=frozenset(k.scopes))
            for k in keys.values()
            if not k.revoked
        }
        return _Snapshot(signature, keys, principals)

    def _remember(self, snapshot: _Snapshot) -> None:
        self._snapshot = snapshot
        self._loaded = True

    def _read_strict(self) -> dict[str, _StoredKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            parsed = msgspec.convert(tomllib.loads(text), _KeyFile)
        except (
            OSError,
            UnicodeDecodeError,
            tomllib.TOMLDecodeError,
            msgspec.ValidationError,
        ) as exc:
            raise ConfigError(
                f"QUARRY_API_KEYS_FILE={str(self.path)!r} is not valid: {exc}"
            ) from None
        for key in parsed.keys:
            if key.created_at.tzinfo is None:
                key.created_at = key.created_at.replace(tzinfo=UTC)
        return {k.id: k for k in parsed.keys}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, _StoredKey]]:
        """Hold the lock file, hand out the keys as on disk now, write them back afterwards."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = self._read_strict()
            yield keys
            _write_atomic(self.path, _dump(keys.values()))
            self._remember(self._load(self._signature()))
        finally:
            os.close(fd)  # releases the lock


def _validate_name(name: str) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    try:
        clean.encode("utf-8")
    except UnicodeEncodeError:
        clean = ""
    if not clean or len(clean) > _MAX_NAME:
        raise InvalidInput(
            f"a key name must be 1-{_MAX_NAME} characters of text",
            details={"field": "name"},
        )
    return clean


def _hash(secret: str) -> str:
    return _HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def _info(stored: _StoredKey) -> KeyInfo:
    return KeyInfo(
        id=stored.id,
        name=stored.name,
        scopes=tuple(stored.scopes),
        created_at=stored.created_at,
        revoked=stored.revoked,
    )


# --- writing TOML (the standard library only reads it) -------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _dump(keys: Iterable[_StoredKey]) -> str:
    lines = ["# Quarry API keys: sha256 hashes only, never the keys. Managed by `quarry keys`.", ""]
    for key in sorted(keys, key=lambda k: (k.created_at, k.id)):
        lines += [
            "[[keys]]",
            f"id = {_toml_string(key.id)}",
            f"name = {_toml_string(key.name)}",
            f"scopes = [{', '.join(_toml_string(s) for s in key.scopes)}]",
            f"created_at = {key.created_at.isoformat()}",
            f"revoked = {'true' if key.revoked else 'false'}",
            f"hash = {_toml_string(key.hash)}",
            "",
        ]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

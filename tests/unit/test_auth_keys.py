"""API keys: create, list, revoke, verify; hashes only on disk; concurrent writers lose nothing."""

from __future__ import annotations

import stat
import threading
import tomllib
from pathlib import Path

import pytest

from app.kernel.auth import (
    ANONYMOUS_PRINCIPAL,
    SERVICE_PRINCIPAL,
    KeyStore,
    Principal,
    check_scope,
    parse_scopes,
    verify_service_token,
)
from app.kernel.settings import ConfigError
from contracts.common import InvalidInput, NotFound, PermissionDenied


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "api_keys.toml"


@pytest.fixture
def store(keys_file: Path) -> KeyStore:
    return KeyStore(keys_file)


def test_a_created_key_verifies_with_its_scopes(store: KeyStore) -> None:
    info, secret = store.create("ci", ["predict", "read"])

    principal = store.verify(secret)

    assert principal == Principal(key_id=info.id, name="ci", scopes=frozenset({"read", "predict"}))
    assert info.scopes == ("read", "predict")
    assert not info.revoked
    assert info.created_at.tzinfo is not None


def test_the_key_has_the_documented_format(store: KeyStore) -> None:
    info, secret = store.create("ci", ["read"])

    prefix, key_id, rest = secret[:3], secret[3:15], secret[15:]
    assert prefix == "qk_"
    assert key_id == info.id
    assert len(key_id) == 12
    int(key_id, 16)
    assert rest.startswith("_")
    assert len(rest) > 40


def test_the_file_holds_hashes_only_with_mode_0600(store: KeyStore, keys_file: Path) -> None:
    _, secret = store.create("ci", ["read"])
    secret_part = secret[16:]

    text = keys_file.read_text()
    assert secret_part not in text
    assert secret not in text
    (record,) = tomllib.loads(text)["keys"]
    assert record["hash"].startswith("sha256:")
    assert len(record["hash"]) == len("sha256:") + 64
    assert set(record) == {"id", "name", "scopes", "created_at", "revoked", "hash"}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_wrong_unknown_and_malformed_keys_do_not_verify(store: KeyStore) -> None:
    info, secret = store.create("ci", ["read"])

    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify(f"qk_{'0' * 12}_{secret[16:]}") is None
    assert store.verify(f"qk_{info.id}") is None
    assert store.verify(f"qk_{info.id}-{secret[16:]}") is None
    assert store.verify("") is None
    assert store.verify("Bearer nonsense") is None


def test_list_shows_every_key_without_secrets(store: KeyStore) -> None:
    first, _ = store.create("first", ["read"])
    second, _ = store.create("second", ["admin"])

    listed = store.list()

    assert {k.id for k in listed} == {first.id, second.id}
    assert {k.name: k.scopes for k in listed} == {"first": ("read",), "second": ("admin",)}


def test_a_revoked_key_fails_and_stays_listed(store: KeyStore) -> None:
    info, secret = store.create("ci", ["read"])

    revoked = store.revoke(info.id)

    assert revoked.revoked
    assert store.verify(secret) is None
    assert [k.revoked for k in store.list()] == [True]
    assert store.revoke(info.id).revoked  # twice is harmless


def test_revoking_an_unknown_key_is_not_found(store: KeyStore) -> None:
    with pytest.raises(NotFound) as caught:
        store.revoke("0123456789ab")
    assert caught.value.code == "not_found"


def test_unknown_scopes_are_refused_naming_the_valid_ones(store: KeyStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.create("ci", ["read", "write"])

    assert "'write'" in caught.value.message
    for scope in ("admin", "read", "predict", "ingest", "train"):
        assert scope in caught.value.message
    assert caught.value.details["unknown"] == ["write"]


def test_an_empty_scope_list_or_name_is_refused(store: KeyStore) -> None:
    with pytest.raises(InvalidInput):
        store.create("ci", [])
    with pytest.raises(InvalidInput):
        store.create("  ", ["read"])


def test_scopes_accept_a_comma_separated_string() -> None:
    assert parse_scopes("train, read,read") == ("read", "train")


def test_names_needing_escapes_survive_the_file(store: KeyStore, keys_file: Path) -> None:
    name = 'ops "prod" \\ tab\t newline\n bell\x07 del\x7f ünïcode ☃'

    store.create(name, ["read"])

    assert tomllib.loads(keys_file.read_text())["keys"][0]["name"] == name.strip()
    assert KeyStore(keys_file).list()[0].name == name.strip()


def test_concurrent_creators_lose_no_key(keys_file: Path) -> None:
    created: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def create_five() -> None:
        own_store = KeyStore(keys_file)  # like a separate `quarry keys create` process
        try:
            start.wait()
            for i in range(5):
                created.append(own_store.create(f"key-{i}", ["read"])[1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create_five) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    reader = KeyStore(keys_file)
    assert len(reader.list()) == 40
    assert all(reader.verify(secret) is not None for secret in created)


def test_verify_sees_keys_written_by_another_process_after_the_recheck_interval(
    keys_file: Path,
) -> None:
    clock = Clock()
    server = KeyStore(keys_file, clock=clock)
    assert server.verify("qk_000000000000_x") is None  # loads the (missing) file

    info, secret = KeyStore(keys_file).create("late", ["read"])

    assert server.verify(secret) is None  # looked less than a second ago
    clock.now += 1.5
    assert server.verify(secret) is not None
    KeyStore(keys_file).revoke(info.id)
    clock.now += 1.5
    assert server.verify(secret) is None


def test_a_store_sees_its_own_writes_at_once(keys_file: Path) -> None:
    clock = Clock()
    store = KeyStore(keys_file, clock=clock)
    info, secret = store.create("ci", ["read"])
    assert store.verify(secret) is not None

    store.revoke(info.id)

    assert store.verify(secret) is None


def test_a_corrupt_file_is_a_config_error_naming_the_variable(keys_file: Path) -> None:
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text("[[keys]]\nid = 3\n")

    with pytest.raises(ConfigError, match="QUARRY_API_KEYS_FILE"):
        KeyStore(keys_file).list()
    with pytest.raises(ConfigError):
        KeyStore(keys_file).create("ci", ["read"])
    assert keys_file.read_text() == "[[keys]]\nid = 3\n"  # never overwritten


def test_a_file_broken_later_keeps_the_keys_read_before(keys_file: Path) -> None:
    clock = Clock()
    store = KeyStore(keys_file, clock=clock)
    _, secret = store.create("ci", ["read"])
    keys_file.write_text("not toml [")
    clock.now += 5

    assert store.verify(secret) is not None


def test_admin_covers_every_scope() -> None:
    admin = Principal(key_id="k", name="n", scopes=frozenset({"admin"}))
    reader = Principal(key_id="k", name="n", scopes=frozenset({"read"}))

    assert all(admin.allows(s) for s in ("read", "predict", "ingest", "train", "admin"))
    assert reader.allows("read")
    assert not reader.allows("predict")
    with pytest.raises(PermissionDenied) as caught:
        check_scope(reader, "train")
    assert caught.value.details["needed_scope"] == "train"


def test_service_and_anonymous_principals_hold_every_scope() -> None:
    for principal in (SERVICE_PRINCIPAL, ANONYMOUS_PRINCIPAL):
        assert all(principal.allows(s) for s in ("read", "predict", "ingest", "train", "admin"))


def test_the_service_token_compares_exactly() -> None:
    assert verify_service_token("s3cret", "s3cret")
    assert not verify_service_token("s3cre", "s3cret")
    assert not verify_service_token("", None)
    assert not verify_service_token("", "")
    assert not verify_service_token("ünï", "s3cret")

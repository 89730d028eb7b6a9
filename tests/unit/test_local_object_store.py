"""LocalObjectStore: storage in a directory and the signed URLs the gateway serves."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.errors import Forbidden, InvalidInput, ObjectNotFound, StorageError
from shared.settings import Settings
from shared.storage import LocalObjectStore, ObjectStore, open_object_store

SECRET = b"unit-test-secret-0123456789abcdef"
BUCKET = "latina-uploads"
KEY = "originals/2026/11/26/0123456789abcdef0123456789abcdef.jpg"


class Clock:
    """A settable stand-in for time.time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", SECRET, "https://latina.test/", now=clock)


def signed_parts(url: str) -> tuple[str, str, str, str]:
    """Split a store URL into (bucket, key, expires, sig) as the gateway route sees them."""
    parts = urlsplit(url)
    prefix = "/objects/"
    assert parts.path.startswith(prefix)
    bucket, _, key = parts.path[len(prefix) :].partition("/")
    query = parse_qs(parts.query)
    return bucket, key, query["expires"][0], query["sig"][0]


def test_local_store_satisfies_the_object_store_protocol(store: LocalObjectStore) -> None:
    as_protocol: ObjectStore = store
    assert as_protocol is store


def test_root_is_created_at_construction(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "objects"
    LocalObjectStore(root, SECRET)
    assert root.is_dir()


async def test_put_then_get_returns_the_same_bytes(store: LocalObjectStore) -> None:
    await store.put(BUCKET, KEY, b"\xff\xd8jpeg bytes", "image/jpeg")
    assert await store.get(BUCKET, KEY) == b"\xff\xd8jpeg bytes"
    assert (store.root / BUCKET / KEY).read_bytes() == b"\xff\xd8jpeg bytes"


async def test_put_replaces_the_object_and_leaves_no_temporary_files(
    store: LocalObjectStore,
) -> None:
    await store.put(BUCKET, KEY, b"first", "image/jpeg")
    await store.put(BUCKET, KEY, b"second", "image/jpeg")
    assert await store.get(BUCKET, KEY) == b"second"
    assert os.listdir((store.root / BUCKET / KEY).parent) == [Path(KEY).name]


async def test_get_of_missing_object_raises_object_not_found(store: LocalObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        await store.get(BUCKET, "originals/missing.jpg")
    assert info.value.code == "object_not_found"


async def test_get_of_a_directory_prefix_raises_object_not_found(
    store: LocalObjectStore,
) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    with pytest.raises(ObjectNotFound):
        await store.get(BUCKET, "originals/2026")


async def test_delete_removes_the_object_and_is_idempotent(store: LocalObjectStore) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    await store.delete(BUCKET, KEY)
    with pytest.raises(ObjectNotFound):
        await store.get(BUCKET, KEY)
    await store.delete(BUCKET, KEY)
    await store.delete("never-created", "a/b.png")


@pytest.mark.parametrize(
    "key",
    ["../x", "/etc/passwd", "a/../../b", ".hidden", "a/./b", "a//b", "", "a/b/", "a\\b", "é.jpg"],
)
async def test_unsafe_keys_are_refused(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(InvalidInput) as info:
        await store.put(BUCKET, key, b"x", "image/jpeg")
    assert info.value.code == "invalid_object_key"
    assert not any(p.is_file() for p in store.root.parent.rglob("*"))


@pytest.mark.parametrize("bucket", ["..", "UPPER", "a", "../objects", "x/y", ".hidden"])
async def test_unsafe_buckets_are_refused(store: LocalObjectStore, bucket: str) -> None:
    with pytest.raises(InvalidInput):
        await store.put(bucket, KEY, b"x", "image/jpeg")
    with pytest.raises(InvalidInput):
        await store.get(bucket, KEY)


async def test_symlink_leading_out_of_the_root_is_refused(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"{}")
    (store.root / BUCKET).mkdir()
    (store.root / BUCKET / "link").symlink_to(outside)
    with pytest.raises(InvalidInput):
        await store.get(BUCKET, "link/secret.json")


async def test_signed_url_reads_back_the_object(store: LocalObjectStore, clock: Clock) -> None:
    await store.put(BUCKET, KEY, b"jpeg", "image/jpeg")
    url = await store.url(BUCKET, KEY, 3600)
    assert url.startswith(f"https://latina.test/objects/{BUCKET}/{KEY}?expires=")
    bucket, key, expires, sig = signed_parts(url)
    assert int(expires) == int(clock.now) + 3600
    assert "=" not in sig and "+" not in sig and "/" not in sig
    assert await store.read_signed(bucket, key, expires, sig) == (b"jpeg", "image/jpeg")


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("a/b.png", "image/png"),
        ("a/b.webp", "image/webp"),
        ("a/b.jpeg", "image/jpeg"),
        ("exports/v1.json", "application/json"),
        ("models/gp.pt", "application/octet-stream"),
        ("models/noext", "application/octet-stream"),
    ],
)
async def test_signed_read_guesses_the_content_type_from_the_extension(
    store: LocalObjectStore, key: str, content_type: str
) -> None:
    await store.put(BUCKET, key, b"x", "text/plain")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, key, 60))
    assert await store.read_signed(BUCKET, key, expires, sig) == (b"x", content_type)


async def test_tampered_signature_is_refused(store: LocalObjectStore) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    tampered = ("A" if sig[0] != "A" else "B") + sig[1:]
    for bad in (tampered, "", sig[:-1], sig + "A", "é" * len(sig)):
        with pytest.raises(Forbidden) as info:
            await store.read_signed(BUCKET, KEY, expires, bad)
        assert info.value.code == "invalid_signature"


async def test_signature_does_not_transfer_to_another_key_or_bucket(
    store: LocalObjectStore,
) -> None:
    other_key = "originals/2026/11/26/ffffffffffffffffffffffffffffffff.jpg"
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    await store.put(BUCKET, other_key, b"private", "image/jpeg")
    await store.put("latina-other", KEY, b"private", "image/jpeg")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    for bucket, key in ((BUCKET, other_key), ("latina-other", KEY)):
        with pytest.raises(Forbidden) as info:
            await store.read_signed(bucket, key, expires, sig)
        assert info.value.code == "invalid_signature"


async def test_tampered_expiry_is_refused(store: LocalObjectStore) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    with pytest.raises(Forbidden) as info:
        await store.read_signed(BUCKET, KEY, str(int(expires) + 86_400), sig)
    assert info.value.code == "invalid_signature"


@pytest.mark.parametrize("expires", ["", "soon", "-1", "1e9", " 1800000060", "9" * 40])
async def test_malformed_expiry_is_refused(store: LocalObjectStore, expires: str) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    _, _, _, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    with pytest.raises(Forbidden):
        await store.read_signed(BUCKET, KEY, expires, sig)


async def test_expired_url_is_refused(store: LocalObjectStore, clock: Clock) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    clock.now += 59
    assert (await store.read_signed(BUCKET, KEY, expires, sig))[0] == b"x"
    clock.now += 1
    with pytest.raises(Forbidden) as info:
        await store.read_signed(BUCKET, KEY, expires, sig)
    assert info.value.code == "url_expired"


async def test_url_signed_with_another_secret_is_refused(
    store: LocalObjectStore, clock: Clock
) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    other = LocalObjectStore(store.root, b"another-secret", now=clock)
    _, _, expires, sig = signed_parts(await other.url(BUCKET, KEY, 60))
    with pytest.raises(Forbidden) as info:
        await store.read_signed(BUCKET, KEY, expires, sig)
    assert info.value.code == "invalid_signature"


async def test_genuine_url_for_a_deleted_object_raises_object_not_found(
    store: LocalObjectStore,
) -> None:
    await store.put(BUCKET, KEY, b"x", "image/jpeg")
    _, _, expires, sig = signed_parts(await store.url(BUCKET, KEY, 60))
    await store.delete(BUCKET, KEY)
    with pytest.raises(ObjectNotFound):
        await store.read_signed(BUCKET, KEY, expires, sig)


async def test_url_without_base_url_is_relative(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, SECRET)
    assert (await store.url(BUCKET, KEY, 60)).startswith(f"/objects/{BUCKET}/{KEY}?")


async def test_ping_passes_on_a_writable_root(store: LocalObjectStore) -> None:
    await store.ping()
    assert os.listdir(store.root) == []


async def test_ping_raises_storage_error_when_the_root_is_gone(
    tmp_path: Path,
) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root, SECRET)
    root.rmdir()
    root.write_bytes(b"not a directory")
    with pytest.raises(StorageError):
        await store.ping()


async def test_factory_opens_a_local_store_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(
        latina_data_dir=tmp_path / "data",
        public_base_url="https://latina.test/",
        latina_secret_key="factory-secret",
    )
    async with open_object_store(settings) as store:
        assert isinstance(store, LocalObjectStore)
        assert store.root == (tmp_path / "data" / "objects").resolve()
        url = await store.url(BUCKET, KEY, 60)
        await store.put(BUCKET, KEY, b"x", "image/jpeg")
    assert url.startswith(f"https://latina.test/objects/{BUCKET}/")
    _, _, expires, sig = signed_parts(url)
    same_secret = LocalObjectStore(tmp_path / "data" / "objects", b"factory-secret")
    assert await same_secret.read_signed(BUCKET, KEY, expires, sig) == (b"x", "image/jpeg")

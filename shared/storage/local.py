"""An ``ObjectStore`` in a local directory, for development and single-machine deployments.

Objects live at ``root/<bucket>/<key>``. Browsers reach them through URLs the gateway signs
with HMAC-SHA256 and serves from ``GET /objects/{bucket}/{key}``; ``read_signed`` is the check
that route relies on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shared.errors import Forbidden, InvalidInput, ObjectNotFound, StorageError
from shared.storage.base import validate_bucket, validate_key

# Versioned so the message format can change without old signatures verifying under it.
_SIGNATURE_DOMAIN = b"latina-object-url-v1"
# Twelve digits reach far past any real expiry and keep int() away from huge inputs.
_EXPIRES_RE = re.compile(r"^[0-9]{1,12}$")
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "json": "application/json",
}
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Valid key segments never start with a dot, so these names cannot collide with objects.
_TEMP_PREFIX = ".tmp-"
_PING_PREFIX = ".ping-"


def content_type_for(key: str) -> str:
    """The media type served for ``key``, guessed from its extension only.

    Args:
        key: An object key such as ``originals/2026/11/26/abc.jpg``.

    Returns:
        A media type; ``application/octet-stream`` for unknown extensions.
    """
    _, dot, extension = key.rpartition(".")
    if not dot:
        return _DEFAULT_CONTENT_TYPE
    return _CONTENT_TYPES.get(extension.lower(), _DEFAULT_CONTENT_TYPE)


class LocalObjectStore:
    """A directory-backed ``ObjectStore`` whose URLs are signed by the gateway.

    Args:
        root: Directory holding one sub-directory per bucket; created if missing.
        secret: Key for the URL signatures; URLs signed with another secret are refused.
        base_url: Public origin of the gateway, prefixed to URLs (empty: relative URLs).
        now: Clock returning Unix seconds; tests inject a fake one.
    """

    def __init__(
        self,
        root: Path,
        secret: bytes,
        base_url: str = "",
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("LocalObjectStore needs a non-empty signing secret")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the object directory {root}") from exc
        # Resolved once so the containment check compares against a fixed, symlink-free root.
        self._root = root.resolve()
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._now = now

    @property
    def root(self) -> Path:
        """The resolved directory holding the buckets."""
        return self._root

    def _path(self, bucket: str, key: str) -> Path:
        validate_bucket(bucket)
        validate_key(key)
        path = (self._root / bucket / key).resolve()
        # validate_key already rules out "..", but a symlink planted inside the root could still
        # lead elsewhere; resolve() follows it and this check catches the escape.
        if not path.is_relative_to(self._root / bucket) or path == self._root / bucket:
            raise InvalidInput("invalid object key", code="invalid_object_key")
        return path

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` atomically: readers see the old object or the new one, never a part.

        ``content_type`` is not stored; ``read_signed`` derives it from the key's extension.
        """
        path = self._path(bucket, key)
        try:
            await asyncio.to_thread(_write_atomically, path, data)
        except OSError as exc:
            raise StorageError(
                "could not write the object", details={"bucket": bucket, "key": key}
            ) from exc

    async def get(self, bucket: str, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` when there is none."""
        path = self._path(bucket, key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            # A directory or a file in place of a directory means no object under that key.
            raise ObjectNotFound(
                "object not found", details={"bucket": bucket, "key": key}
            ) from exc
        except OSError as exc:
            raise StorageError(
                "could not read the object", details={"bucket": bucket, "key": key}
            ) from exc

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; removing a missing object is not an error.

        Emptied parent directories are left in place: removing them would race with a
        concurrent ``put`` creating a sibling there.
        """
        path = self._path(bucket, key)
        try:
            await asyncio.to_thread(path.unlink)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StorageError(
                "could not delete the object", details={"bucket": bucket, "key": key}
            ) from exc

    async def url(self, bucket: str, key: str, expires_in: int) -> str:
        """A gateway URL for the object that verifies for ``expires_in`` seconds."""
        self._path(bucket, key)
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        expires = str(int(self._now()) + expires_in)
        sig = self._sign(bucket, key, expires)
        return f"{self._base_url}/objects/{bucket}/{key}?expires={expires}&sig={sig}"

    async def read_signed(self, bucket: str, key: str, expires: str, sig: str) -> tuple[bytes, str]:
        """Return an object's bytes and media type if the URL's signature and expiry hold.

        Args:
            bucket: Bucket from the URL path.
            key: Key from the URL path.
            expires: The ``expires`` query parameter (Unix seconds, decimal).
            sig: The ``sig`` query parameter.

        Returns:
            The object's bytes and the media type guessed from the key's extension.

        Raises:
            Forbidden: ``invalid_signature`` when the signature is missing, malformed or does
                not match; ``url_expired`` when a genuine URL is past its expiry.
            ObjectNotFound: The URL is genuine but the object is gone.
        """
        if not _EXPIRES_RE.match(expires):
            raise Forbidden("invalid object URL", code="invalid_signature")
        expected = self._sign(bucket, key, expires).encode("ascii")
        # errors="replace" keeps non-ASCII garbage from raising before the comparison.
        if not hmac.compare_digest(expected, sig.encode("utf-8", errors="replace")):
            raise Forbidden("invalid object URL", code="invalid_signature")
        # Checked after the signature so only genuine URLs learn that they have expired.
        # Truncating in url() and expiring at the instant itself keep URLs from outliving
        # expires_in.
        if self._now() >= int(expires):
            raise Forbidden("the object URL has expired", code="url_expired")
        data = await self.get(bucket, key)
        return data, content_type_for(key)

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the root is a directory we can write to."""
        try:
            await asyncio.to_thread(_probe_writable, self._root)
        except OSError as exc:
            raise StorageError(f"object directory {self._root} is not writable") from exc

    def _sign(self, bucket: str, key: str, expires: str) -> str:
        # Newlines cannot occur in a valid bucket or key, so the fields cannot run together;
        # invalid ones just produce a signature no URL carries.
        message = b"\n".join((_SIGNATURE_DOMAIN, bucket.encode(), key.encode(), expires.encode()))
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits in the target directory so os.replace stays on one filesystem
    # and is therefore atomic.
    fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _probe_writable(root: Path) -> None:
    if not root.is_dir():
        raise NotADirectoryError(str(root))
    # os.access is not trusted here: it says yes to root even on a read-only mount.
    fd, probe = tempfile.mkstemp(prefix=_PING_PREFIX, dir=root)
    os.close(fd)
    os.unlink(probe)

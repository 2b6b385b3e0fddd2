"""ImageStore on the local filesystem: the embedded backend, served by the app under /media."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from stat import S_ISREG
from urllib.parse import urlsplit

from stockroom.domain.errors import StorageUnavailable

# Segments start with a letter or digit, so ".", "..", hidden files and temp files never match.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_MAX_KEY_LENGTH = 512
_TEMP_PREFIX = ".tmp-"


def _check_key(key: str) -> str:
    """Return `key` if it is a safe relative path such as "img/ab/cdef.jpg", else ValueError."""
    if len(key) > _MAX_KEY_LENGTH or not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


@contextmanager
def _translate_os_errors(target: str) -> Iterator[None]:
    """Re-raise filesystem failures (full disk, permissions) as the port's StorageUnavailable."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"file storage failed on {target!r}: {exc}") from exc


class FileImageStore:
    """Stores each key as a file under `root`; writes are atomic (temp file + os.replace)."""

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root.absolute()
        self._public_base_url = public_base_url.rstrip("/")

    @classmethod
    def from_url(cls, url: str, public_base_url: str) -> FileImageStore:
        """`file://./media` is relative to the working directory, `file:///srv/media` absolute."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.query or parts.fragment:
            raise ValueError(f"not a file storage URL: {url!r}")
        # file:///abs and file://localhost/abs are absolute; file://./media is "./media".
        path = parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path
        if not path:
            raise ValueError(f"file storage URL has no path: {url!r}")
        return cls(Path(path), public_base_url)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        # The content type is implied by the key's extension when /media serves the file.
        path = self.root / _check_key(key)
        with _translate_os_errors(key):
            await asyncio.to_thread(_write_atomically, path, data)
        return self.url_for(key)

    async def get(self, key: str) -> bytes:
        path = self.root / _check_key(key)
        with _translate_os_errors(key):
            try:
                return await asyncio.to_thread(path.read_bytes)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise KeyError(key) from exc

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self.root / _check_key(key) for key in keys]
        with _translate_os_errors(",".join(keys)):
            await asyncio.to_thread(_unlink_all, paths)

    def url_for(self, key: str) -> str:
        return f"{self._public_base_url}/media/{_check_key(key)}"

    async def size(self, key: str) -> int | None:
        path = self.root / _check_key(key)
        with _translate_os_errors(key):
            try:
                stat = await asyncio.to_thread(path.stat)
            except (FileNotFoundError, NotADirectoryError):
                return None
        return stat.st_size if S_ISREG(stat.st_mode) else None

    def presigned_put(self, key: str, content_type: str, expires_in: int) -> str | None:
        return None  # the API signs a URL of its own (PUT /uploads/{job_id})

    async def ping(self) -> None:
        with _translate_os_errors(str(self.root)):
            await asyncio.to_thread(_check_writable, self.root)

    async def close(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a partial write; once this
    returns, the file survives a power cut under its name.

    The file's own fsync makes its bytes durable, not its name: the rename (and any
    directory made for it) is an entry in a directory, durable once that directory is
    fsynced. Without it, a row the caller then commits could point at a file the crash
    took back."""
    _make_directories(path.parent)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp creates 0600; the files are public media
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _make_directories(directory: Path) -> None:
    """`mkdir -p`, each new directory's entry made durable in its parent."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)  # another writer may make it meanwhile
        _fsync_directory(new.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _check_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"{root} is not writable")

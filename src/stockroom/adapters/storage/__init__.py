"""ImageStore adapters, chosen by the scheme of `storage_url`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from stockroom.adapters.storage.file import FileImageStore
from stockroom.adapters.storage.s3 import S3ImageStore
from stockroom.domain.ports import ImageStore

__all__ = ["FileImageStore", "S3ImageStore", "build_image_store"]

_FACTORIES: dict[str, Callable[..., ImageStore]] = {
    "file": FileImageStore.from_url,
    "s3": S3ImageStore.from_url,
}


def build_image_store(storage_url: str, public_base_url: str, **opts: Any) -> ImageStore:
    """Build the ImageStore that `storage_url` names; `opts` go to that backend's `from_url`."""
    scheme = urlsplit(storage_url).scheme
    factory = _FACTORIES.get(scheme)
    if factory is None:
        supported = ", ".join(f"{name}://" for name in _FACTORIES)
        raise ValueError(
            f"unsupported storage URL scheme {scheme or '(none)'!r} in {storage_url!r}; "
            f"expected one of {supported}"
        )
    return factory(storage_url, public_base_url, **opts)

"""The photos that `stockroom serve --demo` serves itself, under /media/demo/, so the image
pipeline can be seen working without internet. Their authors and licences: README.md here."""

from __future__ import annotations

import os
import tempfile
from importlib.resources import files
from pathlib import Path

__all__ = ["FOLDER", "OTHER_PHOTO", "PHOTOS", "PRODUCT_PHOTO", "install_photos"]

# The demo product's (DEMO-1): stored turned a quarter, with EXIF orientation 6, so the
# pipeline's auto-orient shows. The other one is for the quick start's and README's examples.
PRODUCT_PHOTO = "colorful-cups.jpg"
OTHER_PHOTO = "fallen-leaf.jpg"
PHOTOS = (PRODUCT_PHOTO, OTHER_PHOTO)
FOLDER = "demo"  # under the file storage root, hence served as /media/demo/<photo>


def install_photos(storage_root: Path) -> Path:
    """Copy the photos into `storage_root/demo/` unless they are there already; the folder."""
    folder = storage_root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        data = files(__name__).joinpath(name).read_bytes()
        target = folder / name
        if target.is_file() and target.read_bytes() == data:
            continue
        # Atomically, like the file store: /media never serves half a photo.
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, target)
    return folder

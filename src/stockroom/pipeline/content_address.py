"""Content-addressed keys for processed images: the key is a hash of the bytes stored.

Equal outputs share one object, whatever source or recipe made them, and a redelivered job
or a repeated upload writes the same object again, which is harmless. The output is hashed,
not the source it came from: it is a fraction of the source's size (a tenth, for a photo
through the default pipeline), and the key stays as stable, since libvips' encoders are
deterministic for a given build, source and recipe.
"""

from __future__ import annotations

import hashlib


def content_key(data: bytes, extension: str) -> str:
    """`img/<2 hex>/<32 hex>.<ext>`: the first 128 bits of the sha256 of `data`."""
    name = hashlib.sha256(data).hexdigest()[:32]
    return f"img/{name[:2]}/{name}.{extension.lstrip('.')}"

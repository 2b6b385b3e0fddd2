"""Processed images are stored under a hash of their bytes."""

from __future__ import annotations

import hashlib

from stockroom.pipeline.content_address import content_key


def test_the_key_is_the_hash_of_the_bytes_stored() -> None:
    data = b"\xff\xd8\xff" + bytes(range(256)) * 10
    key = content_key(data, "jpg")
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"img/{digest[:2]}/{digest[:32]}.jpg"
    assert content_key(data, ".jpg") == key  # an extension with its dot is the same
    assert content_key(data + b"\0", "jpg") != key
    assert content_key(data, "webp") == key.removesuffix("jpg") + "webp"

"""Content-addressed keys for processed images: same source + same operations = same key.

A redelivered job or a repeated upload writes the same object again, which is harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from stockroom.domain.operations import Operation, operations_to_json

# Bump when the default pipeline's output changes, so old objects are not reused.
PIPELINE_VERSION = 1


def content_key(
    source: bytes, ops: Sequence[Operation] | None, extension: str, *, jpeg_quality: int
) -> str:
    """`img/<2 hex>/<32 hex>.<ext>`: sha256 of the source bytes and the canonical recipe."""
    recipe = {
        "v": PIPELINE_VERSION,
        "ops": operations_to_json(ops or ()),
        "jpeg_quality": jpeg_quality,
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(source).digest())
    digest.update(canonical)
    name = digest.hexdigest()[:32]
    return f"img/{name[:2]}/{name}.{extension.lstrip('.')}"

"""Operations run as one libvips pipeline: the source is loaded once (after a header-only
look), shrunk on load where a resize allows, and encoded once, whatever the chain."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import pyvips

from stockroom.domain.operations import parse_operations_text
from stockroom.pipeline.operations import process
from tests.support.images import photo_bytes

_LOADS = ("new_from_buffer", "thumbnail_buffer")
_SAVES = ("jpegsave_buffer", "pngsave_buffer", "webpsave_buffer", "heifsave_buffer")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()

    def spy(name: str, original: Any, *, static: bool) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            if name == "new_from_buffer" and kwargs.get("access") == "sequential":
                counted["sequential"] += 1
            if name == "thumbnail_buffer" or kwargs.get("shrink", 1) > 1:
                counted["shrunk on load"] += 1
            return original(*args, **kwargs)

        return staticmethod(counting) if static else counting

    for name in _LOADS:
        monkeypatch.setattr(
            pyvips.Image, name, spy(name, getattr(pyvips.Image, name), static=True), raising=False
        )
    for name in _SAVES:

        def save(self: pyvips.Image, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            counted[_name] += 1
            return pyvips.Operation.call(_name, self, *args, **kwargs)

        monkeypatch.setattr(pyvips.Image, name, save, raising=False)
    return counted


@pytest.mark.parametrize(
    "text",
    [
        "resize,100x100",
        "resize,100x100;rotate,33;convert,webp",
        "force_resize,60x40;compress,30",
        "rotate,90;resize,50x50;convert,png",
        "rotate,180;force_resize,30x30;rotate,15;convert,avif;compress,40",
        "convert,jpeg",
    ],
)
def test_a_chain_loads_the_source_once_and_encodes_once(text: str, calls: Counter[str]) -> None:
    source = photo_bytes(400, 300, "jpeg")
    calls.clear()

    process(source, parse_operations_text(text), jpeg_quality=50, max_pixels=50_000_000)

    loads = calls["new_from_buffer"] + calls["thumbnail_buffer"]
    assert loads == 2, calls  # the header look in _inspect, then the pipeline's one load
    assert sum(calls[name] for name in _SAVES) == 1, calls
    if text.startswith(("resize", "force_resize")):
        assert calls["shrunk on load"] == 1


@pytest.mark.parametrize(("width", "height"), [(3000, 2000), (5000, 3000)])
def test_the_default_pipeline_loads_once_with_shrink_on_load(
    width: int, height: int, calls: Counter[str]
) -> None:
    source = photo_bytes(width, height, "jpeg")
    calls.clear()

    process(source, None, jpeg_quality=50, max_pixels=50_000_000)

    assert calls["new_from_buffer"] + calls["thumbnail_buffer"] == 2, calls
    assert calls["shrunk on load"] == 1


def test_a_free_turn_then_a_shrink_loads_the_source_shrunk(calls: Counter[str]) -> None:
    """The turn and the resize after it are one map, so the shrink happens on load."""
    source = photo_bytes(1600, 1200, "jpeg")
    calls.clear()

    out = process(
        source, parse_operations_text("rotate,33;force_resize,300x200;convert,avif"),
        jpeg_quality=50, max_pixels=50_000_000,
    )  # fmt: skip

    assert calls["shrunk on load"] == 1
    assert calls["new_from_buffer"] + calls["thumbnail_buffer"] == 2  # and the header look
    assert calls["heifsave_buffer"] == 1
    assert (out.width, out.height) == (300, 200)

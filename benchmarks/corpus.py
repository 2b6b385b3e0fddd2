"""The image corpus of the pipeline benchmark: real photographs cut to 1000-4000 px JPEGs.

Source: Debian's `plasma-workspace-wallpapers` (`apt-get download`, `dpkg-deb -x`), whose
large JPEGs are photographs and photo-like renders. Each corpus image is a seeded random
crop of one of them (random aspect ratio, portrait or landscape), resized so its long side
is spread evenly over 1000-4000 px, saved as a baseline JPEG at q90 without metadata.
When the package cannot be had, photo-like generated images stand in (smooth colour fields,
blurred detail, grain: see tests/support/images.py). Built once, cached in `.bench/corpus/`.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyvips

from benchmarks import RESULTS_DIR

CORPUS_DIR = RESULTS_DIR / "corpus"
SOURCE_DIR = RESULTS_DIR / "corpus-src"
PACKAGE = "plasma-workspace-wallpapers"
COUNT = 120
MIN_SIDE, MAX_SIDE = 1000, 4000
QUALITY = 90
# 50 MP: libvips refuses more than max_image_pixels = 50,000,000, and 8660x5774 is
# 50,002,840, so one row less.
BIG_SIZE = (8660, 5773)
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4)
MANIFEST_VERSION = 2


@dataclass(frozen=True, slots=True)
class Corpus:
    directory: Path
    images: tuple[str, ...]  # file names in `directory`, the 1000-4000 px set
    big: str  # the 50 MP JPEG, also in `directory`
    origin: str  # "photographs (plasma-workspace-wallpapers ...)" or "generated"
    sizes: dict[str, tuple[int, int]]

    def path(self, name: str) -> Path:
        return self.directory / name

    def total_megapixels(self) -> float:
        return sum(w * h for name, (w, h) in self.sizes.items() if name in self.images) / 1e6


def load_or_build(log: bool = True) -> Corpus:
    """The cached corpus, building it first when missing or outdated."""
    manifest = CORPUS_DIR / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("version") == MANIFEST_VERSION and all(
            (CORPUS_DIR / name).exists() for name in [*data["images"], data["big"]]
        ):
            return _from_manifest(data)
    if CORPUS_DIR.exists():
        shutil.rmtree(CORPUS_DIR)
    CORPUS_DIR.mkdir(parents=True)
    sources = _photograph_sources()
    if sources:
        origin = f"photographs: {len(sources)} JPEGs of Debian's {PACKAGE}"
    else:
        origin = "generated photo-like images (tests/support/images.py style)"
    if log:
        print(f"[corpus] building {COUNT} images from {origin}...", file=sys.stderr)
    data = _build(sources, origin)
    manifest.write_text(json.dumps(data, indent=1) + "\n")
    return _from_manifest(data)


def _from_manifest(data: dict[str, object]) -> Corpus:
    sizes = {name: (int(w), int(h)) for name, (w, h) in data["sizes"].items()}  # type: ignore[attr-defined]
    return Corpus(
        directory=CORPUS_DIR,
        images=tuple(data["images"]),  # type: ignore[arg-type]
        big=str(data["big"]),
        origin=str(data["origin"]),
        sizes=sizes,
    )


def _photograph_sources() -> list[Path]:
    """The package's JPEGs of at least 2560 px, downloading and unpacking it if needed."""
    unpacked = SOURCE_DIR / "x"
    if not unpacked.exists():
        SOURCE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            if not list(SOURCE_DIR.glob("*.deb")):
                subprocess.run(
                    ["apt-get", "download", PACKAGE],
                    cwd=SOURCE_DIR,
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
            deb = next(SOURCE_DIR.glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, timeout=600)
        except (OSError, subprocess.SubprocessError, StopIteration) as exc:
            print(f"[corpus] no {PACKAGE} ({exc}); generating images", file=sys.stderr)
            return []
    found = []
    for path in sorted(unpacked.rglob("*.jpg")):
        if path.name.startswith("screenshot") or "images_dark" in path.parts:
            continue
        header = pyvips.Image.new_from_file(str(path))
        if max(header.width, header.height) >= 2560:
            found.append(path)
    return found


def _build(sources: list[Path], origin: str) -> dict[str, object]:
    rng = random.Random(42)
    sizes: dict[str, tuple[int, int]] = {}
    names = []
    for index in range(COUNT):
        long_side = round(MIN_SIDE + (MAX_SIDE - MIN_SIDE) * index / (COUNT - 1))
        aspect = rng.choice(ASPECTS)
        short_side = round(long_side / aspect)
        portrait = rng.random() < 0.3
        width, height = (short_side, long_side) if portrait else (long_side, short_side)
        image = _picture(sources, rng, width, height, index)
        name = f"photo-{index:03d}-{width}x{height}.jpg"
        image.jpegsave(str(CORPUS_DIR / name), Q=QUALITY, keep="none")
        sizes[name] = (width, height)
        names.append(name)
    width, height = BIG_SIZE
    big = _picture(sources, rng, width, height, COUNT)
    big_name = f"big-{width}x{height}.jpg"
    big.jpegsave(str(CORPUS_DIR / big_name), Q=QUALITY, keep="none")
    sizes[big_name] = BIG_SIZE
    return {
        "version": MANIFEST_VERSION,
        "origin": origin,
        "images": names,
        "big": big_name,
        "sizes": sizes,
    }


def _picture(
    sources: list[Path], rng: random.Random, width: int, height: int, seed: int
) -> pyvips.Image:
    """A `width` x `height` sRGB image: a random crop of a photograph, scaled to size."""
    if not sources:
        return _generated(width, height, seed)
    # Prefer photographs large enough for the crop (no upscaling); else the largest ones.
    fitting = [p for p in sources if _fits(p, width, height)]
    source = pyvips.Image.new_from_file(str(rng.choice(fitting or _largest(sources))))
    source = source.colourspace("srgb") if source.interpretation != "srgb" else source
    if source.bands > 3:
        source = source.extract_band(0, n=3)
    # The largest crop of the target's aspect ratio, shrunk by up to a third (a detail of
    # the photograph), at a random place.
    scale = min(source.width / width, source.height / height) * rng.uniform(0.67, 1.0)
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = rng.randint(0, source.width - crop_w)
    top = rng.randint(0, source.height - crop_h)
    crop = source.crop(left, top, crop_w, crop_h)
    resized = crop.resize(width / crop_w, vscale=height / crop_h, kernel="lanczos3")
    if resized.width != width or resized.height != height:
        resized = resized.gravity("centre", width, height, extend="copy")
    return resized


def _dimensions(path: Path) -> tuple[int, int]:
    header = pyvips.Image.new_from_file(str(path))
    return header.width, header.height


def _fits(path: Path, width: int, height: int) -> bool:
    source_w, source_h = _dimensions(path)
    return source_w >= width and source_h >= height


def _largest(sources: list[Path]) -> list[Path]:
    areas = {path: _dimensions(path)[0] * _dimensions(path)[1] for path in sources}
    top = max(areas.values())
    return [path for path, area in areas.items() if area == top]


def _generated(width: int, height: int, seed: int) -> pyvips.Image:
    from tests.support.images import photo_like

    return photo_like(width, height, seed=seed)


if __name__ == "__main__":
    corpus = load_or_build()
    print(corpus.origin, len(corpus.images), f"{corpus.total_megapixels():.0f} MP", corpus.big)

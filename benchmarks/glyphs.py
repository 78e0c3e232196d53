"""A self-made 28x28 grey-level dataset of 10 classes, to check presets on data no config names.

    .venv/bin/python benchmarks/glyphs.py /tmp/glyphs [--count 37500] [--seed 0] [--format imagefolder|parquet]
        [--style strokes|filled]
    .venv/bin/python benchmarks/quality.py --data /tmp/glyphs

The letters A to J, one class each, rendered with Pillow from the TrueType fonts under
--fonts (all the *.ttf found, sorted by path: 22 DejaVu faces here), each drawn with its own
random stroke width, rotation, shear, scale and shift, then a slight blur; then framed as MNIST
frames its digits: the glyph's longer side is brought to about 20 pixels and its centre of mass
to the middle of the 28x28 frame (give or take the random shift). White on black, like MNIST.

`--style filled` draws the same letters as grey-level objects instead, closer to Fashion-MNIST
than to MNIST: heavier strokes make solid silhouettes, and each is filled with its own texture
(a base grey, a linear shading, stripes of random period and angle, pixel noise), so the
pixels take every grey level and not mostly 0 and 255. The letter, font, pose and frame of
image i are those of the default style.

Output, in a format the pipeline reads (vae_model/data/sources.py):
- imagefolder (default): PATH/A/00000000.png ... PATH/J/..., data.kind=imagefolder;
- parquet: one file with an `image` column of PNG bytes and a `label` column, data.kind=parquet.
Neither format carries a split: the loader holds out data.val_fraction (0.2 by default) of the
rows by content hash, so the default 37,500 images train on about 30,000 and hold out 7,500.

Image i depends only on --seed and i (and the font files), so a smaller set is a prefix of a
larger one and the same seed writes the same bytes on the same machine. Classes cycle (i % 10).
The output is written whole into a temporary file or folder beside PATH, then renamed to PATH;
an existing PATH is refused, never replaced, and nothing but that temporary is ever deleted.
Needs numpy and Pillow (and pyarrow, a pipeline dependency, for --format parquet).
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from vae_model.atomic import atomic_path

LETTERS = "ABCDEFGHIJ"
STYLES = ("strokes", "filled")
SIDE = 28
FONT_DIR = "/usr/share/fonts/truetype"
_CANVAS = 192  # glyphs are drawn large, transformed, then reduced: smooth edges like MNIST's
_FONT_PX = 96


def font_files(root: str | Path = FONT_DIR) -> list[Path]:
    fonts = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() == ".ttf" and p.is_file())
    if not fonts:
        raise SystemExit(f"{root}: no .ttf fonts found (pass --fonts DIR)")
    return fonts


def _centre(glyph: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Put a (h, w) float image into the 28x28 frame with its centre of mass at the middle,
    moved by (dx, dy) pixels; sub-pixel placement by bilinear resampling."""
    h, w = glyph.shape
    pad = np.zeros((SIDE * 2 + h, SIDE * 2 + w), np.float32)
    pad[SIDE:SIDE + h, SIDE:SIDE + w] = glyph
    total = pad.sum()
    ys, xs = np.indices(pad.shape)
    cy, cx = (ys * pad).sum() / total, (xs * pad).sum() / total
    # Output pixel (u, v) samples the padded glyph at (u + x0, v + y0).
    x0, y0 = cx - (SIDE / 2 - 0.5) - dx, cy - (SIDE / 2 - 0.5) - dy
    image = Image.fromarray(pad, mode="F")
    framed = image.transform((SIDE, SIDE), Image.Transform.AFFINE, (1, 0, x0, 0, 1, y0), Image.Resampling.BILINEAR)
    return np.asarray(framed, np.float32)


def render(index: int, seed: int, fonts: list[Path], cache: dict, style: str = "strokes") -> tuple[np.ndarray, int]:
    """Image `index` of the dataset for `seed`: (28, 28) uint8 and its label."""
    rng = np.random.default_rng([seed, index])
    label = index % len(LETTERS)
    path = fonts[int(rng.integers(len(fonts)))]
    font = cache.get(path)
    if font is None:
        font = cache[path] = ImageFont.truetype(str(path), _FONT_PX)
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    stroke = int(rng.integers(0, 7))  # at 96 px: thin to heavy strokes
    if style == "filled":
        stroke += 10  # the letter's counters close: a solid silhouette
    ImageDraw.Draw(canvas).text((_CANVAS / 2, _CANVAS / 2), LETTERS[label], fill=255, font=font, anchor="mm",
                                stroke_width=stroke, stroke_fill=255)
    # Rotation, shear and anisotropic scale about the canvas centre.
    angle = np.deg2rad(rng.uniform(-15, 15))
    shear = rng.uniform(-0.3, 0.3)
    sx, sy = rng.uniform(0.8, 1.2, size=2)
    forward = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([sx, sy])
    a, b, d, e = np.linalg.inv(forward).ravel()  # Pillow maps output pixels to input pixels
    c0 = _CANVAS / 2
    coeffs = (a, b, c0 - a * c0 - b * c0, d, e, c0 - d * c0 - e * c0)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    box = canvas.getbbox()
    if box is None:  # cannot happen for these letters; keeps a broken font from crashing the run
        return np.zeros((SIDE, SIDE), np.uint8), label
    glyph = canvas.crop(box)
    # MNIST: the longer side is 20 pixels. Here 16 to 21, so sizes vary as handwriting does.
    longer = rng.uniform(16, 21)
    factor = longer / max(glyph.size)
    size = (max(1, round(glyph.size[0] * factor)), max(1, round(glyph.size[1] * factor)))
    glyph = glyph.resize(size, Image.Resampling.LANCZOS)
    blur = rng.uniform(0, 0.7)
    dx, dy = rng.uniform(-1.5, 1.5, size=2)
    framed = _centre(np.asarray(glyph, np.float32), dx, dy)
    image = Image.fromarray(np.clip(np.rint(framed), 0, 255).astype(np.uint8))
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    array = np.asarray(image, np.float32)
    # Strokes reach full white as MNIST's do, whatever the blur took off.
    array = np.clip(np.rint(array * (255.0 / max(array.max(), 1.0))), 0, 255).astype(np.uint8)
    if style == "filled":
        array = _fill(array, np.random.default_rng([seed, index, 1]))
    return array, label


def _fill(silhouette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The silhouette (its grey level as coverage) filled with a random texture."""
    ys, xs = np.indices((SIDE, SIDE), dtype=np.float64) / (SIDE - 1) - 0.5
    shade, stripes = rng.uniform(0, 2 * np.pi, size=2)
    texture = (rng.uniform(70, 230)
               + rng.uniform(-60, 60) * (xs * np.cos(shade) + ys * np.sin(shade))
               + rng.uniform(0, 40) * np.sin(2 * np.pi * (xs * np.cos(stripes) + ys * np.sin(stripes)) * SIDE
                                         / rng.uniform(2.5, 8) + rng.uniform(0, 2 * np.pi))
               + rng.normal(0, rng.uniform(0, 12), size=(SIDE, SIDE)))
    return np.clip(np.rint(texture * (silhouette / 255.0)), 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def images(count: int, seed: int, fonts: list[Path], style: str = "strokes"):
    cache: dict = {}
    for i in range(count):
        yield (i, *render(i, seed, fonts, cache, style))


def _write_imagefolder(tmp: Path, count: int, seed: int, fonts: list[Path], style: str) -> None:
    for letter in LETTERS:
        (tmp / letter).mkdir()
    for i, array, label in images(count, seed, fonts, style):
        (tmp / LETTERS[label] / f"{i:08d}.png").write_bytes(png_bytes(array))


def _write_parquet(tmp: Path, count: int, seed: int, fonts: list[Path], style: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pngs, labels = [], []
    for _, array, label in images(count, seed, fonts, style):
        pngs.append(png_bytes(array))
        labels.append(label)
    table = pa.table({"image": pa.array(pngs, pa.binary()), "label": pa.array(labels, pa.int64())})
    pq.write_table(table, tmp)


def write(out: str | Path, count: int, seed: int = 0, fmt: str = "imagefolder", fonts: list[Path] | None = None,
          style: str = "strokes") -> Path:
    """Write the dataset to `out`, which must not exist; returns `out`."""
    out = Path(out)
    if count < 1:
        raise SystemExit("--count: expected at least 1 image")
    if fmt not in ("imagefolder", "parquet"):
        raise SystemExit(f"--format: expected imagefolder or parquet, got {fmt!r}")
    if style not in STYLES:
        raise SystemExit(f"--style: expected one of {', '.join(STYLES)}, got {style!r}")
    if os.path.lexists(out):
        raise SystemExit(f"{out}: already exists; remove it or pick another path (it is never replaced)")
    fonts = fonts if fonts is not None else font_files()
    if fmt == "parquet":
        with atomic_path(out) as tmp:
            _write_parquet(tmp, count, seed, fonts, style)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()  # the mode any new folder gets (umask applied), which the rename keeps
    try:
        _write_imagefolder(tmp, count, seed, fonts, style)
        os.rename(tmp, out)  # refused if a folder with files appeared at `out` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder this call made, only
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder (imagefolder) or file (parquet) to create; must not exist")
    parser.add_argument("--count", type=int, default=37500,
                        help="images in all (default 37,500: about 30,000 train and 7,500 held out at data.val_fraction=0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["imagefolder", "parquet"], default="imagefolder")
    parser.add_argument("--style", choices=STYLES, default="strokes",
                        help="strokes: white letters on black, like MNIST; filled: textured grey silhouettes")
    parser.add_argument("--fonts", default=FONT_DIR, help=f"folder searched for *.ttf (default {FONT_DIR})")
    args = parser.parse_args(argv)
    fonts = font_files(args.fonts)
    started = time.perf_counter()
    write(args.out, args.count, args.seed, args.format, fonts, args.style)
    print(f"{args.out}: {args.count} images of {', '.join(LETTERS)} ({args.format}, {args.style}, seed {args.seed}, "
          f"{len(fonts)} fonts from {args.fonts}) in {time.perf_counter() - started:.0f} s; "
          f"read with data.kind={args.format} data.path={args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

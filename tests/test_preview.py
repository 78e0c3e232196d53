"""preview.png: large enough to look at, and a row per requested label for a conditional model;
the PNG encoder keeps pixels and channel order."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vae_model.sample_files import PREVIEW_CELL, encode_png, preview


def _images(n: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def test_unconditional_preview_is_upscaled_8_by_8():
    images = _images(100)
    picture, shown = preview(images, None)
    assert shown == 64 and picture.shape[0] == 3
    cell = picture.shape[1] // 8
    assert cell >= PREVIEW_CELL
    # Nearest-neighbour upscaling: the first sample's first pixel fills a whole block.
    scale = -(-PREVIEW_CELL // 8)
    block = picture[0, 2 : 2 + scale, 2 : 2 + scale]
    assert (block == images[0, 0, 0, 0]).all()


def test_conditional_preview_has_a_row_per_label_headed_by_it():
    images = _images(60)
    labels = np.arange(60) % 3
    picture, shown = preview(images, labels)
    assert shown == 3 * 8
    scale = -(-PREVIEW_CELL // 8)
    cell = 8 * scale + 2
    assert picture.shape[1] == 3 * cell + 2  # three rows: labels 0, 1 and 2
    margin = picture.shape[2] - (8 * cell + 2)
    assert margin > 0
    # Each row's label is written in the margin: white pixels on the grey band.
    for row in range(3):
        band = picture[:, 2 + row * cell : 2 + (row + 1) * cell - 2, :margin]
        assert (band > 200).all(axis=0).any()
    # Row 1 starts with the first sample of label 1.
    first = picture[0, 2 + cell : 2 + cell + scale, margin + 2 : margin + 2 + scale]
    assert (first == images[1, 0, 0, 0]).all()


def test_named_classes_head_their_rows_in_a_margin_that_fits_the_names():
    images, labels = _images(60), np.arange(60) % 3
    numbered, _ = preview(images, labels)
    named, shown = preview(images, labels, ("cat", "dog", "hedgehog"))
    digits_margin = 28
    margin = named.shape[2] - (numbered.shape[2] - digits_margin)
    assert shown == 3 * 8 and named.shape[1] == numbered.shape[1] and margin > digits_margin
    assert np.array_equal(named[:, :, margin:], numbered[:, :, digits_margin:])  # the same grid beside it
    cell = named.shape[1] // 3
    written = (named[:, 2 + 2 * cell : 3 * cell, :margin] > 200).all(axis=0).any(axis=0)
    columns = np.flatnonzero(written)
    assert columns.max() > digits_margin and columns.max() < margin  # "hedgehog": wider than a digit's band, inside its own


def test_png_encoding_keeps_grey_and_rgb_pixels_and_channel_order():
    grey = _images(1, 28)[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(grey)))), grey[0])
    rgb = np.random.default_rng(1).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(rgb)))
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded).transpose(2, 0, 1), rgb)
    assert encode_png(grey) == encode_png(grey.copy())

"""benchmarks/glyphs.py: a deterministic 28x28 grey-level 10-class dataset the pipeline's loader reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import glyphs
from vae_model.config import DataConfig
from vae_model.data import load_source

COUNT = 200


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return glyphs.write(tmp_path_factory.mktemp("glyphs") / "seed0", COUNT, seed=0)


def test_same_seed_writes_the_same_bytes(folder, tmp_path):
    again = glyphs.write(tmp_path / "again", COUNT, seed=0)
    assert _files(again) == _files(folder)
    assert len(_files(folder)) == COUNT
    first, second = (glyphs.write(tmp_path / name, COUNT, seed=0, fmt="parquet") for name in ("a.parquet", "b.parquet"))
    assert first.read_bytes() == second.read_bytes()


def test_a_different_seed_draws_different_images(folder, tmp_path):
    other = _files(glyphs.write(tmp_path / "seed1", COUNT, seed=1))
    ours = _files(folder)
    assert other.keys() == ours.keys()  # same names and classes: image i is letter i % 10
    assert sum(other[name] != ours[name] for name in ours) == COUNT


@pytest.mark.parametrize("fmt", ["imagefolder", "parquet"])
def test_the_pipeline_loader_reads_it_with_a_held_out_split(folder, tmp_path, fmt):
    path = folder if fmt == "imagefolder" else glyphs.write(tmp_path / "glyphs.parquet", COUNT, seed=0, fmt="parquet")
    train, held = load_source(DataConfig(kind=fmt, path=str(path), num_classes=10))
    assert train.shape == held.shape == (1, 28, 28)
    assert train.images.dtype == np.uint8
    assert len(train) + len(held) == COUNT
    assert 0.1 * COUNT < len(held) < 0.3 * COUNT  # data.val_fraction 0.2, by content hash
    assert train.num_classes == 10 and set(held.labels) == set(range(10))
    assert np.bincount(np.concatenate([train.labels, held.labels])).tolist() == [COUNT // 10] * 10
    seen = {row.tobytes() for row in train.images}
    assert not any(row.tobytes() in seen for row in held.images)  # held-out images are unseen
    # MNIST-like: white strokes reaching full white on black, the ink in the central 20x20.
    assert train.images.max() == 255 and np.median(train.images) == 0
    ink = train.images.astype(np.float64)
    assert ink[:, :, 4:24, 4:24].sum() > 0.95 * ink.sum()


def test_an_existing_path_is_refused_and_left_alone(folder, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("a user's file")
    for fmt in ("imagefolder", "parquet"):
        with pytest.raises(SystemExit, match="already exists"):
            glyphs.write(mine, 10, fmt=fmt)
    assert _files(mine) == {"keep.txt": b"a user's file"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left beside it


def test_the_filled_style_draws_textured_grey_silhouettes_of_the_same_letters(folder, tmp_path):
    filled = glyphs.write(tmp_path / "filled", COUNT, seed=0, style="filled")
    assert _files(filled) == _files(glyphs.write(tmp_path / "again", COUNT, seed=0, style="filled"))
    train, held = load_source(DataConfig(kind="imagefolder", path=str(filled), num_classes=10))
    strokes, _ = load_source(DataConfig(kind="imagefolder", path=str(folder), num_classes=10))
    assert train.class_names == strokes.class_names == tuple(glyphs.LETTERS)
    pixels = np.concatenate([train.images, held.images]).ravel()
    ink = pixels[pixels > 0]
    # Every grey level in use, mostly mid-greys: not MNIST's strokes of 0 and 255.
    assert len(np.unique(ink)) > 200
    assert 60 < np.median(ink) < 200 and np.mean(ink == 255) < 0.05
    ours, theirs = _files(filled), _files(folder)
    assert ours.keys() == theirs.keys() and all(ours[name] != theirs[name] for name in ours)
    with pytest.raises(SystemExit, match="--style: expected one of strokes, filled"):
        glyphs.write(tmp_path / "bad", 10, style="stripes")
    assert not (tmp_path / "bad").exists()

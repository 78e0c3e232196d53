"""Ingest: the real sources into ImageData, and the canonical snapshot round trip."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from flows import tracking
from flows.ingest import ingest
from tests.conftest import MNIST_RAW, needs_mnist
from tests.reliability import corpus
from vae_model.config import DataConfig, load_config
from vae_model.data import ImageData, load_source, read_snapshot, row_hashes, split_by_hash, write_snapshot


@needs_mnist
def test_mnist_from_the_original_gz_files_keeps_the_official_test_split(tmp_path):
    train, val = load_source(DataConfig(kind="mnist", path=str(MNIST_RAW)))
    assert (len(train), len(val)) == (60000, 10000)
    assert train.shape == (1, 28, 28) and train.images.dtype == np.uint8
    assert sorted(np.unique(train.labels)) == list(range(10))
    # The published pixel mean of the training images (x/255) is 0.1307.
    assert abs(train.images.mean() / 255 - 0.1307) < 1e-3
    assert train.notes == ("md5 of all four files matches the published MNIST gz files",)
    path, sha = write_snapshot(train, val, tmp_path)
    back_train, back_val = read_snapshot(path)
    assert np.array_equal(back_train.images, train.images) and np.array_equal(back_val.labels, val.labels)
    assert write_snapshot(back_train, back_val, tmp_path) == (path, sha)


def _same(a, b) -> bool:
    return all(np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels) for x, y in zip(a, b))


def _repack(source: Path, target: Path, plain: set[str]) -> Path:
    """Copy the gz files, re-compressed at level 1, or uncompressed for the names in `plain`."""
    target.mkdir()
    for path in sorted(source.glob("*.gz")):
        data = gzip.decompress(path.read_bytes())
        if path.stem in plain:
            (target / path.stem).write_bytes(data)
        else:
            (target / path.name).write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    return target


def test_recompressed_and_plain_idx_copies_give_the_same_data(tmp_path):
    original = corpus.idx_folder(tmp_path / "orig", counts=(7, 4))
    expected = load_source(DataConfig(kind="mnist", path=str(original)))
    assert [len(s) for s in expected] == [7, 4] and expected[0].shape == (1, 28, 28)
    for kind, copy in (("fashion_mnist", _repack(original, tmp_path / "level1", plain=set())),
                       ("mnist", corpus.idx_folder(tmp_path / "plain", compress=None, counts=(7, 4)))):
        loaded = load_source(DataConfig(kind=kind, path=str(copy)))
        assert _same(loaded, expected), copy
        assert "md5 differs" in loaded[0].notes[0] and "content passed the checks" in loaded[0].notes[0]


@needs_mnist
def test_real_mnist_re_compressed_or_uncompressed_is_accepted(tmp_path):
    expected = load_source(DataConfig(kind="mnist", path=str(MNIST_RAW)))
    halves = {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    for plain in (halves, {"train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"}):
        copy = _repack(MNIST_RAW, tmp_path / "-".join(sorted(plain)), plain)
        loaded = load_source(DataConfig(kind="mnist", path=str(copy)))
        assert _same(loaded, expected)
        for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            assert name in loaded[0].notes[0]


def test_ingest_tags_a_file_that_is_not_the_published_one(workdir):
    folder = corpus.idx_folder(workdir / "m", compress=None)
    cfg = load_config(None, ["data.kind=mnist", f"data.path={folder}"])
    run_id = tracking.start_run(cfg.tracking)
    data = ingest.fn(cfg.to_dict(), run_id)
    tags = MlflowClient().get_run(run_id).data.tags
    assert data["n_train"] == 5 and tags["data_sha256"] == data["sha256"]
    assert tags["data_note"].startswith("md5 differs from the published MNIST gz files for train-images-idx3-ubyte, "
                                        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")


def test_digits_split_is_seeded_and_the_snapshot_hash_names_the_content(tmp_path):
    a = load_source(DataConfig(split_seed=1))
    b = load_source(DataConfig(split_seed=1))
    c = load_source(DataConfig(split_seed=2))
    assert np.array_equal(a[1].images, b[1].images) and not np.array_equal(a[1].images, c[1].images)
    assert len(a[0]) + len(a[1]) == 1797 and abs(len(a[1]) - 1797 * 0.2) < 4 * (1797 * 0.2 * 0.8) ** 0.5
    (_, sha_a), (_, sha_c) = write_snapshot(*a, tmp_path), write_snapshot(*c, tmp_path)
    assert sha_a != sha_c


def _keys(data: ImageData) -> set[bytes]:
    return {row.tobytes() for row in row_hashes(data)}


def test_a_row_keeps_its_split_when_rows_are_added_or_reordered():
    train, val = load_source(DataConfig())
    everything = ImageData(np.concatenate([train.images, val.images]),
                           np.concatenate([train.labels, val.labels]), "digits")
    order = np.random.default_rng(3).permutation(len(everything))
    small_train, small_val = split_by_hash(everything.subset(order[:600]), 0.2, 0)
    assert _keys(small_train) <= _keys(train) and _keys(small_val) <= _keys(val)
    assert len(small_val) > 0 and len(small_train) > 0
    # The label is part of the row: the same pixels under another label are another row.
    relabelled = ImageData(val.images, (val.labels + 1) % 10, "digits")
    assert not _keys(relabelled) & _keys(val)


def test_a_hash_split_keeps_one_row_on_each_side():
    two = ImageData(np.arange(2, dtype=np.uint8).reshape(2, 1, 1, 1), None, "two")
    for fraction in (0.001, 0.999):
        train, val = split_by_hash(two, fraction, 0)
        assert len(train) == len(val) == 1 and split_by_hash(two, fraction, 0)[1].images == val.images

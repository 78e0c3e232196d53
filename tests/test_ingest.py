"""Ingest: the real sources into ImageData, and the canonical snapshot round trip."""

from __future__ import annotations

import numpy as np

from tests.conftest import MNIST_RAW, needs_mnist
from vae_model.config import DataConfig
from vae_model.data import ImageData, load_source, read_snapshot, row_hashes, split_by_hash, write_snapshot


@needs_mnist
def test_mnist_from_the_original_gz_files_keeps_the_official_test_split(tmp_path):
    train, val = load_source(DataConfig(kind="mnist", path=str(MNIST_RAW)))
    assert (len(train), len(val)) == (60000, 10000)
    assert train.shape == (1, 28, 28) and train.images.dtype == np.uint8
    assert sorted(np.unique(train.labels)) == list(range(10))
    # The published pixel mean of the training images (x/255) is 0.1307.
    assert abs(train.images.mean() / 255 - 0.1307) < 1e-3
    path, sha = write_snapshot(train, val, tmp_path)
    back_train, back_val = read_snapshot(path)
    assert np.array_equal(back_train.images, train.images) and np.array_equal(back_val.labels, val.labels)
    assert write_snapshot(back_train, back_val, tmp_path) == (path, sha)


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

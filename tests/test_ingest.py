"""Ingest: the real sources into ImageData, and the canonical snapshot round trip."""

from __future__ import annotations

import numpy as np

from tests.conftest import MNIST_RAW, needs_mnist
from vae_model.config import DataConfig
from vae_model.data import load_source, read_snapshot, write_snapshot


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


def test_digits_split_is_seeded_and_the_snapshot_hash_names_the_content(tmp_path):
    a = load_source(DataConfig(split_seed=1))
    b = load_source(DataConfig(split_seed=1))
    c = load_source(DataConfig(split_seed=2))
    assert np.array_equal(a[1].images, b[1].images) and not np.array_equal(a[1].images, c[1].images)
    assert len(a[0]) + len(a[1]) == 1797 and abs(len(a[1]) - 1797 * 0.2) < 4 * (1797 * 0.2 * 0.8) ** 0.5
    (_, sha_a), (_, sha_c) = write_snapshot(*a, tmp_path), write_snapshot(*c, tmp_path)
    assert sha_a != sha_c

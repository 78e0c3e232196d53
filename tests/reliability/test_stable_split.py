"""A row's split is a function of the row alone, so rows keep their side as a dataset grows."""

from __future__ import annotations

import numpy as np

from vae_model.config import DataConfig
from vae_model.data import ImageData, load_source, row_hashes, split_by_hash


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

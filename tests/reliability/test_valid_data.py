"""Valid MNIST-format data is accepted whatever its packaging: re-compressed or plain IDX files
hold the same images, and the md5 of the published files is a note, not a refusal."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from flows import tracking
from flows.config import load_config
from flows.ingest import ingest
from tests.conftest import MNIST_RAW, needs_mnist
from tests.reliability import corpus
from vae_model.config import DataConfig
from vae_model.data import load_source


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
    data = ingest.fn(cfg, run_id)
    tags = MlflowClient().get_run(run_id).data.tags
    assert data["n_train"] == 5 and tags["data_sha256"] == data["sha256"]
    assert tags["data_note"].startswith("md5 differs from the published MNIST gz files for train-images-idx3-ubyte, "
                                        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")

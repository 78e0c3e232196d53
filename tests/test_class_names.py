"""Named classes: an image folder's class folders (or a Parquet file's string labels) name its
labels through the snapshot, the registered model, `generate --labels`, the served model, the
manifest and the preview."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from flows.request import generate_here
from flows.train import log_sampler
from tests.conftest import MNIST_RAW, needs_mnist
from tests.reliability.corpus import png_bytes
from vae_model.config import DataConfig, ModelConfig, SampleRequest, TrainConfig
from vae_model.data import load_source, read_snapshot, write_snapshot
from vae_model.data.dataset import ImageData
from vae_model.data.snapshot import content_hash
from vae_model.errors import UserError
from vae_model.likelihood import unscorable
from vae_model.metrics import read_samples
from vae_model.model import VAE
from vae_model.sampling import parse_labels
from vae_model.train import train, vae_config

NAMES = ("cat", "dog", "hedgehog")


def _folder(root, per_class: int = 12):
    rng = np.random.default_rng(0)
    for name in reversed(NAMES):  # made in another order than the sorted one the labels follow
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8))))
    return root


def test_an_image_folders_class_names_survive_the_snapshot_and_name_its_content(tmp_path):
    train_data, val_data = load_source(DataConfig(kind="imagefolder", path=str(_folder(tmp_path / "data"))))
    assert train_data.class_names == val_data.class_names == NAMES
    assert train_data.num_classes == 3
    path, sha = write_snapshot(train_data, val_data, tmp_path / "snapshots")
    again, held = read_snapshot(path)
    assert again.class_names == held.class_names == NAMES
    assert np.array_equal(again.labels, train_data.labels)
    # The same pixels and labels under other names are other data: another snapshot, not this one.
    renamed = [ImageData(d.images, d.labels, d.source, class_names=("a", "b", "c")) for d in (train_data, val_data)]
    assert content_hash(*renamed) != sha
    unnamed = [ImageData(d.images, d.labels, d.source) for d in (train_data, val_data)]
    assert content_hash(*unnamed) != sha


def test_unnamed_data_keeps_the_hash_it_had_before_names_were_recorded():
    # Checkpoints and classifier caches are keyed by it; the value is the default digits' hash
    # from before class names existed.
    assert content_hash(*load_source(DataConfig())) == "20bb62873038889194f6a4171ee90aeb67a115f5f0c72de65a36b00f4ac2a456"


def test_parquet_string_labels_become_class_names_in_sorted_order(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 16))
    table = pa.table({**{f"p{i}": pixels[:, i] for i in range(16)}, "label": ["dog", "cat", "dog", "ant", "cat", "ant"]})
    pq.write_table(table, tmp_path / "x.parquet")
    data = load_source(DataConfig(kind="parquet", path=str(tmp_path / "x.parquet"), val_fraction=0.5))
    every = np.concatenate([d.labels for d in data])
    assert all(d.class_names == ("ant", "cat", "dog") for d in data)
    assert sorted(every.tolist()) == [0, 0, 1, 1, 2, 2]


def test_labels_by_name_parse_as_their_numbers():
    assert parse_labels("dog", 3, class_names=NAMES) == parse_labels("1", 3)
    assert parse_labels("hedgehog,cat", 3, class_names=NAMES) == parse_labels("2,0", 3)
    assert parse_labels("cat:0.25,dog:0.75", 3, class_names=NAMES) == parse_labels("0:0.25,1:0.75", 3)
    # A class folder named "3" is class 2 of ("1", "2", "3"): the name wins over the number.
    assert parse_labels("3", 3, class_names=("1", "2", "3")) == parse_labels("2", 3)
    with pytest.raises(UserError, match="labels 'cow'.*by name: cat, dog, hedgehog"):
        parse_labels("cow", 3, class_names=NAMES)


def test_a_model_of_named_classes_generates_and_serves_by_name(workdir):
    train_data, val_data = load_source(DataConfig(kind="imagefolder", path=str(_folder(workdir / "data"))))
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32, conditional=True, prior_components=2), train_data)
    model = train(model_cfg, TrainConfig(epochs=2, progress=False), train_data, val_data).model.eval()
    # Its own experiment: another test's may be the active one, in a store that is gone.
    experiment = MlflowClient().create_experiment("named", artifact_location=str(workdir / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        version = mlflow.register_model(f"models:/{log_sampler(model)}", "named")
    MlflowClient().set_registered_model_alias("named", "champion", version.version)

    asked = SampleRequest(num_samples=24, seed=3, labels="hedgehog,cat", formats=["parquet", "png"])
    out = generate_here("models:/named@champion", asked, str(workdir / "samples"))["out_dir"]
    manifest = json.loads((workdir / "samples" / "manifest.json").read_text())
    assert manifest["class_names"] == list(NAMES) and manifest["labels"] == [2.0, 0.0]
    samples = read_samples(out)
    assert set(samples.labels.tolist()) == {0, 2}
    rows = pq.read_table(workdir / "samples" / "part-00000.parquet").to_pandas()
    assert rows["label_name"].tolist() == [NAMES[v] for v in rows["label"]]
    assert list(rows["label_name"].cat.categories) == list(NAMES)
    # The same request by number draws the same samples.
    by_number = generate_here("models:/named@champion", asked.model_copy(update={"labels": "2,0"}), str(workdir / "numbers"))
    assert np.array_equal(read_samples(by_number["out_dir"]).images, samples.images)

    served = mlflow.pyfunc.load_model("models:/named@champion").predict(
        pd.DataFrame([{"num_samples": 24, "seed": 3, "labels": "hedgehog,cat"}]))
    assert served["label"].tolist() == samples.labels.tolist()
    assert served["label_name"].tolist() == rows["label_name"].tolist()
    assert np.array_equal(np.stack(served["pixels"].to_list()), samples.images.reshape(24, -1))


def test_a_champion_of_other_class_names_is_not_scored_on_renumbered_labels(tmp_path):
    # One class folder swapped for another renumbers the rest: the champion's 1 is not the data's.
    train_data, _ = load_source(DataConfig(kind="imagefolder", path=str(_folder(tmp_path / "data"))))
    champion = VAE(vae_config(ModelConfig(latent_dim=2, hidden_dim=8, conditional=True), train_data))
    swapped = ImageData(train_data.images, train_data.labels, "swapped", class_names=("cat", "cow", "dog"))
    assert unscorable(champion, swapped) == "its classes are cat, dog, hedgehog, the data's are cat, cow, dog"
    assert unscorable(champion, train_data) is None
    # Numbered labels on either side: numbers are all there is to go by, as before names existed.
    assert unscorable(champion, ImageData(train_data.images, train_data.labels, "numbered")) is None


@needs_mnist
def test_fashion_mnist_classes_have_their_published_names_and_mnist_digits_none():
    # MNIST's files stand in for Fashion-MNIST's here: same names and layout (its md5 becomes a note).
    fashion, _ = load_source(DataConfig(kind="fashion_mnist", path=str(MNIST_RAW)))
    assert fashion.class_names[:2] == ("T-shirt/top", "Trouser") and fashion.num_classes == 10
    assert parse_labels("Ankle boot:0.5,Trouser:0.5", 10, class_names=fashion.class_names) == parse_labels("9:0.5,1:0.5", 10)
    digits, _ = load_source(DataConfig(kind="mnist", path=str(MNIST_RAW)))
    assert digits.class_names == ()

"""Champion/challenger on a real MLflow SQLite store: steps called directly, no CLI."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from flows import comparison
from flows.register import decide, register
from tests.conftest import gated
from vae_model.config import DataConfig
from vae_model.weights import load_model
from vae_model.data import ImageData, load_source, read_snapshot, row_hashes

# The steps are called as plain functions here; in a flow run the artifact belongs to the task run.
artifact_outside_flow = pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")


def _retrain(*extra: str) -> dict:
    """One gated-and-registered retrain through the step functions themselves."""
    cfg, data, trained, report = gated(*extra)
    model = register.fn(cfg, data, trained, report)
    return {"cfg": cfg, "data": data, "trained": trained, "report": report, "model": model,
            "version": MlflowClient().get_model_version("vae-digits", model["version"])}


def _keys(hashes: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in hashes}


def _split_rows(retrained: dict) -> tuple[ImageData, ImageData]:
    return read_snapshot(retrained["data"]["snapshot"])


def _not_trained_on(val: ImageData, *trained_on: ImageData) -> np.ndarray:
    """Mask of held-out rows in none of the given training splits, computed here independently."""
    seen = set().union(*(_keys(row_hashes(t)) for t in trained_on))
    return np.array([row.tobytes() not in seen for row in row_hashes(val)])


def test_decide_needs_more_than_min_improvement():
    assert decide(-30.0, None, 0.0) == (True, "promoted: there was no champion")
    assert decide(-30.0, -30.0, 0.0)[0] is False, "a tie is no better"
    assert decide(-29.9, -30.0, 0.0)[0] is True
    assert decide(-29.9, -30.0, 0.5)[0] is False
    assert decide(-29.0, -30.0, 0.5)[0] is True
    promoted, reason = decide(-10.0, None, 0.0, why_not="it models 1x28x28 images, the data is 1x8x8")
    assert promoted is False and "1x28x28" in reason


@artifact_outside_flow
def test_the_champion_is_scored_only_on_held_out_rows_it_never_trained_on(prefect_server, workdir):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    client = MlflowClient()
    first = _retrain("train.epochs=3")
    v1 = first["version"]
    assert first["model"]["promoted"] and v1.tags["champion_decision"] == "promoted" and v1.tags["compared_with_version"] == "none"
    assert str(client.get_model_version_by_alias("vae-digits", "challenger").version) == "1"
    train1, val1 = _split_rows(first)
    assert v1.tags["compared_on_rows"] == str(len(val1)), "with no champion, every held-out row counts"
    # The gate and the comparison measure the same rows with the same draws.
    assert float(v1.tags["challenger_heldout_elbo"]) == pytest.approx(first["report"]["heldout_elbo"], abs=1e-9)
    recorded = comparison.training_rows(v1.tags, "no-snapshots-here")
    assert recorded is not None and _keys(recorded) == _keys(row_hashes(train1))

    # Another split seed: most of the new held-out rows were the champion's training rows.
    second = _retrain("train.epochs=1", "data.split_seed=1")
    v2 = second["version"]
    train2, val2 = _split_rows(second)
    fair = _not_trained_on(val2, train1, train2)
    assert 0 < fair.sum() < len(val2) / 2
    assert v2.tags["compared_on_rows"] == str(int(fair.sum()))
    assert v2.tags["excluded_champion_training_rows"] == str(len(val2) - int(fair.sum()))
    assert not _keys(row_hashes(val2.subset(fair))) & _keys(recorded), "no champion training row is compared"
    champ_then = comparison.load_weights(v1.tags["weights_uri"])
    champ_now = float(v2.tags["champion_heldout_elbo"])
    assert champ_now == pytest.approx(comparison.score(champ_then, val2.subset(fair), second["cfg"]), abs=1e-9)
    assert champ_now != pytest.approx(comparison.score(champ_then, val2, second["cfg"]), abs=1e-6), \
        "the score on all held-out rows, its own training rows among them, is another number"
    challenger_now = float(v2.tags["challenger_heldout_elbo"])
    assert challenger_now == pytest.approx(comparison.score(load_model(second["trained"]["checkpoint"]), val2.subset(fair), second["cfg"]), abs=1e-9)

    # Worse (one epoch against three) on those rows: the champion stays.
    assert challenger_now < champ_now and not second["model"]["promoted"]
    assert v2.tags["champion_decision"] == "kept" and v2.tags["compared_with_version"] == "1"
    assert str(client.get_model_version_by_alias("vae-digits", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("vae-digits", "challenger").version) == "2"

    # Better on the same rows by more than the margin: promoted.
    third = _retrain("train.epochs=5", "data.split_seed=1", "register.min_improvement=0.01")
    v3 = third["version"]
    assert third["data"]["sha256"] == second["data"]["sha256"] and v3.tags["compared_on_rows"] == v2.tags["compared_on_rows"]
    assert float(v3.tags["champion_heldout_elbo"]) == pytest.approx(champ_now, abs=1e-9), "same model, rows and draws"
    assert float(v3.tags["challenger_heldout_elbo"]) > champ_now + 0.01
    assert third["model"]["promoted"] and "needed more than 0.01" in third["model"]["decision"]
    assert str(client.get_model_version_by_alias("vae-digits", "champion").version) == "3"

    with get_client(sync_client=True) as api:
        artifacts = api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["champion-challenger"])))
    expected = f"Compared on {int(fair.sum())} of the snapshot's {len(val2)} held-out rows"
    texts = [a.data for a in artifacts]
    assert any("champion kept" in t and "vae-digits v2" in t and f"{champ_now:.4f}" in t and expected in t for t in texts), texts


def _digits() -> ImageData:
    train, val = load_source(DataConfig())
    return ImageData(np.concatenate([train.images, val.images]), np.concatenate([train.labels, val.labels]), "digits")


def _digits_parquet(path, index: np.ndarray) -> str:
    """Rows of the sklearn digits (0..255 grey levels) as a Parquet table of pixel columns."""
    rows = _digits().subset(index)
    images, labels = rows.images.reshape(len(index), -1), rows.labels
    columns = {f"p{i}": pa.array(images[:, i]) for i in range(images.shape[1])}
    pq.write_table(pa.table({**columns, "label": pa.array(labels)}), path)
    return str(path)


@artifact_outside_flow
def test_a_grown_dataset_compares_on_rows_the_champion_never_trained_on(prefect_server, workdir):
    order = np.random.default_rng(0).permutation(1797)
    parquet = ["data.kind=parquet"]
    first = _retrain(*parquet, f"data.path={_digits_parquet(workdir / 'day1.parquet', order[:900])}")
    train1, val1 = _split_rows(first)

    # More rows arrive: the old rows keep their side, so none of the champion's rows is held out now.
    second = _retrain(*parquet, f"data.path={_digits_parquet(workdir / 'day2.parquet', order)}")
    train2, val2 = _split_rows(second)
    assert len(val2) > len(val1) and _keys(row_hashes(val1)) <= _keys(row_hashes(val2))
    assert _keys(row_hashes(train1)) <= _keys(row_hashes(train2))
    fair = _not_trained_on(val2, train1)
    v2 = second["version"]
    assert v2.tags["compared_with_version"] == "1" and v2.tags["compared_on_rows"] == str(int(fair.sum())) == str(len(val2))
    assert v2.tags["excluded_champion_training_rows"] == "0"
    assert not _keys(row_hashes(val2.subset(fair))) & _keys(row_hashes(train1))
    champ = comparison.load_weights(first["version"].tags["weights_uri"])
    assert float(v2.tags["champion_heldout_elbo"]) == pytest.approx(comparison.score(champ, val2.subset(fair), second["cfg"]), abs=1e-9)

    # Only rows the first champion trained on, split another way: nothing fair is left to compare on.
    champion_before = str(MlflowClient().get_model_version_by_alias("vae-digits", "champion").version)
    keys1 = _keys(row_hashes(train1))
    trained_rows = order[[row.tobytes() in keys1 for row in row_hashes(_digits().subset(order))]]
    assert len(trained_rows) == len(train1)
    third = _retrain(*parquet, "data.split_seed=5", f"data.path={_digits_parquet(workdir / 'day3.parquet', trained_rows)}")
    v3 = third["version"]
    assert not third["model"]["promoted"] and v3.tags["compared_on_rows"] == "0"
    assert v3.tags["champion_heldout_elbo"] == "n/a" and "trained on" in v3.tags["champion_decision_reason"]
    assert str(MlflowClient().get_model_version_by_alias("vae-digits", "champion").version) == champion_before


def test_a_version_without_its_row_list_falls_back_to_its_snapshot_else_unknown(tmp_path):
    from vae_model.data import write_snapshot

    train, val = load_source(DataConfig())
    _, sha = write_snapshot(train, val, tmp_path)
    rows = comparison.training_rows({"data_sha256": sha}, str(tmp_path))
    assert rows is not None and _keys(rows) == _keys(row_hashes(train))
    assert comparison.training_rows({"data_sha256": sha}, str(tmp_path / "elsewhere")) is None
    assert comparison.training_rows({}, str(tmp_path)) is None

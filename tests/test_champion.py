"""Champion/challenger on a real MLflow SQLite store: steps called directly, no CLI."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from flows import champion, tracking
from flows.ingest import ingest
from flows.register import decide, register
from flows.train import train
from flows.validate import validate
from tests.conftest import TINY
from vae_model.config import load_config


def _retrain(*extra: str) -> dict:
    """One gated-and-registered retrain through the step functions themselves."""
    cfg = load_config(None, [*TINY, *extra])
    config = cfg.to_dict()
    run_id = tracking.start_run(cfg.tracking)
    data = ingest.fn(config, run_id)
    trained = train.fn(config, data, run_id)
    report = validate.fn(config, data, trained, run_id)
    assert report["passed"]
    return {"data": data, "report": report, "model": register.fn(config, data, trained, report)}


def test_decide_needs_more_than_min_improvement():
    assert decide(-30.0, None, 0.0) == (True, "promoted: there was no champion")
    assert decide(-30.0, -30.0, 0.0)[0] is False, "a tie is no better"
    assert decide(-29.9, -30.0, 0.0)[0] is True
    assert decide(-29.9, -30.0, 0.5)[0] is False
    assert decide(-29.0, -30.0, 0.5)[0] is True
    promoted, reason = decide(-10.0, None, 0.0, why_not="it models 1x28x28 images, the data is 1x8x8")
    assert promoted is False and "1x28x28" in reason


# The steps are called as plain functions here; in a flow run the artifact belongs to the task run.
@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")
def test_challenger_replaces_champion_only_when_better_on_the_same_heldout_data(prefect_server, workdir):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    client = MlflowClient()
    first = _retrain("train.epochs=3")
    assert first["model"]["promoted"] and first["model"]["version"] == "1"
    v1 = client.get_model_version("vae-digits", "1")
    assert v1.tags["champion_decision"] == "promoted" and v1.tags["compared_with_version"] == "none"
    assert str(client.get_model_version_by_alias("vae-digits", "challenger").version) == "1"
    # Scored by the same function as the gate: same examples, same noise.
    assert float(v1.tags["challenger_heldout_elbo"]) == pytest.approx(first["report"]["heldout_elbo"], abs=1e-9)

    # Worse (one epoch) and on another held-out split: the champion is re-scored on this split.
    second = _retrain("train.epochs=1", "data.split_seed=1")
    assert second["data"]["sha256"] != first["data"]["sha256"]
    assert not second["model"]["promoted"]
    v2 = client.get_model_version("vae-digits", "2")
    assert str(client.get_model_version_by_alias("vae-digits", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("vae-digits", "challenger").version) == "2"
    assert v2.tags["champion_decision"] == "kept" and v2.tags["compared_with_version"] == "1"
    champ_now = float(v2.tags["champion_heldout_elbo"])
    assert champ_now != float(v1.tags["heldout_elbo"]), "the champion's own tag is from other data"
    cfg = load_config(None, [*TINY, "data.split_seed=1"])
    rescored = champion.score(champion.load_weights(v1.tags["weights_uri"]), second["data"]["snapshot"], cfg)
    assert champ_now == pytest.approx(rescored, abs=1e-9)
    assert float(v2.tags["challenger_heldout_elbo"]) < champ_now

    # Better on the same split by more than the margin: promoted.
    third = _retrain("train.epochs=5", "data.split_seed=1", "register.min_improvement=0.01")
    assert third["model"]["promoted"] and "needed more than 0.01" in third["model"]["decision"]
    assert str(client.get_model_version_by_alias("vae-digits", "champion").version) == "3"
    v3 = client.get_model_version("vae-digits", "3")
    assert float(v3.tags["challenger_heldout_elbo"]) > float(v3.tags["champion_heldout_elbo"]) == pytest.approx(champ_now)

    with get_client(sync_client=True) as api:
        artifacts = api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["champion-challenger"])))
    texts = [a.data for a in artifacts]
    assert any("champion kept" in t and "vae-digits v2" in t and f"{champ_now:.4f}" in t for t in texts), texts

"""Steps that Prefect retries are safe to repeat: a repeated step is called again with the same
arguments, as Prefect's retry does, on a real MLflow SQLite store."""

from __future__ import annotations


import mlflow
import pytest
from mlflow import MlflowClient

from flows import tracking
from flows.ingest import ingest
from flows.train import train
from flows.validate import validate
from tests.conftest import TINY
from vae_model.config import load_config

# Called as plain functions, the steps' Prefect artifacts belong to no flow run.
pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")]


def _trained(*extra: str) -> tuple[dict, dict, dict, dict]:
    cfg = load_config(None, [*TINY, *extra])
    config, run_id = cfg.to_dict(), tracking.start_run(cfg.tracking)
    data = ingest.fn(config, run_id)
    trained = train.fn(config, data, run_id)
    report = validate.fn(config, data, trained, run_id)
    assert report["passed"]
    return config, data, trained, report


def test_a_repeated_train_resumes_its_own_checkpoint_and_logs_each_epoch_once(workdir):
    config, data, first, _ = _trained("train.seed=3")
    run_id = mlflow.get_logged_model(first["model_id"]).source_run_id
    again = train.fn(config, data, run_id)  # train.resume is false, as in TINY
    assert again["resumed_from_epoch"] == 4 and again["epochs"] == 3, "no epoch is trained again"
    client = MlflowClient()
    for key in ("val_elbo", "train_elbo", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key

"""Steps that Prefect retries are safe to repeat: a repeated step is called again with the same
arguments, as Prefect's retry does, on a real MLflow SQLite store."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from flows.register import register
from flows.train import train
from tests.conftest import gated
from tests.reliability.servers import mlflow_server

# Called as plain functions, the steps' Prefect artifacts belong to no flow run.
pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")]



def _versions() -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions("name='vae-digits'"))


def _champion() -> str:
    return str(MlflowClient().get_model_version_by_alias("vae-digits", "champion").version)


def test_a_repeated_train_resumes_its_own_checkpoint_and_logs_each_epoch_once(workdir):
    config, data, first, _ = gated("train.seed=3")
    run_id = mlflow.get_logged_model(first["model_id"]).source_run_id
    again = train.fn(config, data, run_id)  # train.resume is false, as in TINY
    assert again["resumed_from_epoch"] == 4 and again["epochs"] == 3, "no epoch is trained again"
    client = MlflowClient()
    for key in ("val_elbo", "train_elbo", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key


def test_a_repeated_register_finishes_the_same_version(workdir):
    config, data, trained, report = gated()
    first = register.fn(config, data, trained, report)
    tags = MlflowClient().get_model_version("vae-digits", first["version"]).tags
    again = register.fn(config, data, trained, report)
    assert _versions() == ["1"] and again == first
    assert MlflowClient().get_model_version("vae-digits", "1").tags == tags
    assert _champion() == "1"


def test_a_repeated_register_does_not_take_back_a_champion_promoted_since(workdir):
    weak = gated("train.epochs=1")
    strong = gated("train.epochs=4", "train.seed=1")
    assert register.fn(*weak)["promoted"]
    assert register.fn(*strong)["promoted"], "four epochs beat one"
    again = register.fn(*weak)
    assert _versions() == ["1", "2"] and _champion() == "2"
    assert not again["promoted"] and "v2 became champion meanwhile" in again["decision"]


def test_register_failing_on_the_champions_weights_leaves_no_version(workdir):
    config, data, trained, report = gated()
    register.fn(config, data, trained, report)
    weights = MlflowClient().get_model_version("vae-digits", "1").tags["weights_uri"]
    Path(weights.removeprefix("file://")).unlink()
    challenger = gated("train.seed=1")
    for _ in range(2):  # the first attempt and a retry
        with pytest.raises(Exception, match="weights.pt"):
            register.fn(*challenger)
    assert _versions() == ["1"] and _champion() == "1"


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_two_registers_at_once_decide_one_after_the_other(workdir, store):
    with contextlib.ExitStack() as stack:
        if store == "server":
            uri, _ = stack.enter_context(mlflow_server(workdir / "server"))
            stack.enter_context(_tracking(uri))
        extra = [f"tracking.uri={uri}"] if store == "server" else []
        challengers = [gated("train.epochs=1", *extra), gated("train.epochs=4", "train.seed=1", *extra)]
        start, results = threading.Barrier(2), {}

        def run(i: int) -> None:
            start.wait()
            results[i] = register.fn(*challengers[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 2 and _versions() == ["1", "2"]
        client = MlflowClient()
        tags = {v: client.get_model_version("vae-digits", v).tags for v in ("1", "2")}
        first, second = sorted(tags, key=lambda v: tags[v]["compared_with_version"] != "none")
        assert tags[first]["compared_with_version"] == "none", "exactly one decided without a champion"
        assert tags[second]["compared_with_version"] == first, "the other was compared with it"
        assert _champion() == results[1]["version"], "the alias ends on the four-epoch model, whichever finished first"


@contextlib.contextmanager
def _tracking(uri: str):
    """This process's MLflow calls go to `uri`, and back to the test's store afterwards."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)

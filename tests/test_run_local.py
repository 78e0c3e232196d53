"""`vae-pipeline run` without a Prefect API: the steps run in the command's process, which neither
starts a temporary Prefect server nor imports Prefect, and the run leaves the records and the bytes
the Prefect flow leaves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY


def _env(cwd: Path, api: str | None = None) -> dict[str, str]:
    """The environment of a command in `cwd`: its own MLflow store, no Prefect API unless `api`."""
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    store = f"sqlite:///{cwd / 'mlflow.db'}"
    env.update({"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store, "PREFECT_HOME": str(cwd / ".prefect"),
                **({"PREFECT_API_URL": api} if api else {})})
    return env


def _command(cwd: Path, *args: str, api: str | None = None, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The real `vae-pipeline` command in `cwd`."""
    return subprocess.run([sys.executable, *python, "-m", "flows.cli", *args], cwd=cwd, env=_env(cwd, api),
                          capture_output=True, text=True, timeout=300, check=False)


def _run(cwd: Path, *settings: str, api: str | None = None, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`vae-pipeline run` on the tiny recipe with these settings."""
    return _command(cwd, "run", *[a for s in [*TINY, *settings] for a in ("--set", s)], api=api, python=python)


def _imported_prefect(importtime: str) -> bool:
    assert re.search(r"\|\s+torch$", importtime, re.MULTILINE), "importtime lists the modules"
    return bool(re.search(r"\|\s+prefect(\.|$)", importtime, re.MULTILINE))


def _samples(cwd: Path) -> dict[str, bytes]:
    folder = cwd / "outputs" / "samples" / "vae-digits" / "v1"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_without_a_prefect_api_the_run_is_in_process_and_leaves_what_the_flow_leaves(prefect_server, tmp_path):
    here = _run(tmp_path / "here", python=("-X", "importtime"))  # each imported module, on stderr
    assert here.returncode == 0, here.stderr[-2000:]
    assert "temporary server" not in here.stdout + here.stderr
    assert not _imported_prefect(here.stderr), "Prefect was imported"
    assert not (tmp_path / "here" / ".prefect" / "prefect.db").exists()
    assert "registered vae-digits version 1 as models:/vae-digits@champion" in here.stdout
    flow = _run(tmp_path / "flow", api=prefect_server)
    assert flow.returncode == 0, flow.stderr[-2000:]

    for cwd in ("here", "flow"):
        store = f"sqlite:///{tmp_path / cwd / 'mlflow.db'}"
        client = MlflowClient(store, store)
        version = client.get_model_version_by_alias("vae-digits", "champion")
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["validation_status"] == "passed", cwd
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_elbo")] == [1, 2, 3], cwd
    assert _samples(tmp_path / "here") == _samples(tmp_path / "flow") != {}


def test_a_refused_model_in_process_is_one_line_and_registers_nothing(tmp_path):
    done = _run(tmp_path, "validate.min_elbo=1e9")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "quality gate failed" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store, store)
    assert client.search_registered_models() == []
    assert not (tmp_path / "outputs").exists()
    run = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["validation_status"] == "failed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_training_stops_the_run_in_one_line_and_marks_it_killed(tmp_path, sig):
    # SIGTERM is what `docker stop` or a service manager sends; SIGINT, Ctrl-C.
    settings = [*TINY, "train.epochs=100000", "train.checkpoint_every_s=0"]
    command = [sys.executable, "-m", "flows.cli", "run", *[a for s in settings for a in ("--set", s)]]
    child = subprocess.Popen(command, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = tmp_path / ".vae-pipeline" / "checkpoints"
        deadline = time.monotonic() + 120
        while not (checkpoints.is_dir() and any(checkpoints.glob("*.pt"))):  # epoch 1 is done: in training
            assert child.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + sig, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: stopped by {sig.name}: its MLflow run is marked KILLED")
    assert "Traceback" not in stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store, store)
    run = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])[0]
    assert run.info.status == "KILLED"
    assert client.search_registered_models() == [] and not (tmp_path / "outputs").exists()


def test_labels_the_model_cannot_take_are_refused_before_training(tmp_path):
    done = _run(tmp_path, "generate.labels=3")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: generate.labels: this model is not conditional, it takes no labels"], done.stderr[-2000:]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert MlflowClient(store, store).search_registered_models() == []
    assert not (tmp_path / ".vae-pipeline" / "data").exists() and not (tmp_path / "outputs").exists()
    refused = _run(tmp_path, "generate.labels=12", "model.conditional=true", "data.num_classes=10")
    assert refused.returncode == 1 and "error: generate.labels: label 12 is outside 0..9" in refused.stderr


def test_evaluate_without_a_prefect_api_is_in_process_and_scores_as_the_flow_does(prefect_server, tmp_path):
    assert _run(tmp_path).returncode == 0
    args = ("evaluate", "--samples", "outputs/samples/vae-digits/v1", "--set", "evaluate.classifier_steps=200")
    here = _command(tmp_path, *args, python=("-X", "importtime"))
    assert here.returncode == 0, here.stderr[-2000:]
    assert "temporary server" not in here.stdout + here.stderr
    assert not _imported_prefect(here.stderr), "Prefect was imported"
    assert not (tmp_path / ".prefect" / "prefect.db").exists()
    flow = _command(tmp_path, *args, "--prefect", api=prefect_server)
    assert flow.returncode == 0, flow.stderr[-2000:]

    results = [json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{"))) for done in (here, flow)]
    assert results[0]["synthetic"] == results[1]["synthetic"] and results[0]["real"] == results[1]["real"]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store, store)
    for result in results:
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["evaluated_model"] == "models:/vae-digits/1"
        assert run.data.metrics["eval_fcd"] == result["synthetic"]["fcd"]
    assert results[0]["run_id"] != results[1]["run_id"]
    # A folder that is not a generate output: one line, exit 1, no traceback, in process too.
    bad = _command(tmp_path, "evaluate", "--samples", "nowhere")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error:")] == [
        "error: nowhere: no part-*.parquet sample shards found (expected a `generate` output folder)"]

"""Faults: kills, divergence, a tracking server that goes away, and two runs at once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY
from tests.reliability.servers import mlflow_server, stop

# Long enough (tens of seconds) to be interrupted after the first checkpoints.
# A checkpoint after every epoch: the tests stop a run at a known point mid-training.
SLOW = [*TINY, "model.hidden_dim=256", "train.batch_size=16", "train.epochs=60", "train.checkpoint_every_s=0"]


@pytest.fixture
def start_cli(prefect_server, workdir):
    """Start the real command in the background; returns the Popen."""

    def start(*settings: str) -> subprocess.Popen:
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        args = [a for s in settings for a in ("--set", s)]
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *args], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    return start


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _checkpoint(workdir: Path) -> Path | None:
    found = list((workdir / ".vae-pipeline" / "checkpoints").glob("*.pt"))
    return found[0] if found else None


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error:")]


def test_sigkill_during_training_then_resume_continues_from_the_checkpoint(start_cli, workdir):
    process = start_cli(*SLOW)
    _wait_for(lambda: _checkpoint(workdir) is not None, 300, "the first checkpoint")
    time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert MlflowClient().search_registered_models() == []

    resumed = start_cli(*SLOW, "train.resume=true")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    client = MlflowClient()
    version = client.get_model_version_by_alias("vae-digits", "champion")
    run = client.get_run(version.run_id)
    assert int(run.data.tags["resumed_from_epoch"]) > 1
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_elbo")]
    assert steps == list(range(1, 61)), "the resumed run carries the whole history"


def test_divergence_fails_naming_epoch_and_step_and_registers_nothing(cli, workdir):
    code, out = cli("run", *[a for s in [*TINY, "train.lr=1e8"] for a in ("--set", s)])
    assert code == 1
    errors = _error_lines(out)
    assert len(errors) == 1 and "training diverged at epoch 1, step" in errors[0], out
    assert "Traceback" not in out
    assert MlflowClient().search_registered_models() == []
    assert not (workdir / "outputs").exists()


def test_tracking_server_stopped_mid_run_fails_clearly_and_leaves_the_registry(start_cli, workdir):
    with mlflow_server(workdir / "server") as (uri, server):
        process = start_cli(*SLOW, f"tracking.uri={uri}")
        _wait_for(lambda: _checkpoint(workdir) is not None, 300, "training to start")
        stop(server)
        out, _ = process.communicate(timeout=600)
    assert process.returncode == 1, out
    errors = _error_lines(out)
    assert len(errors) == 1 and "127.0.0.1" in errors[0], out
    registry = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'server' / 'server.db'}")
    assert registry.search_registered_models() == []
    assert not (workdir / "outputs").exists()


@pytest.mark.parametrize("store", ["sqlite in a fresh folder", "server"])
def test_two_runs_at_once_against_one_registry(start_cli, workdir, store):
    with contextlib.ExitStack() as stack:
        if store == "server":
            uri, _ = stack.enter_context(mlflow_server(workdir / "server"))
        else:
            uri = os.environ["MLFLOW_TRACKING_URI"]
            assert not Path(uri.removeprefix("sqlite:///")).exists()
        runs = [
            start_cli(*TINY, f"tracking.uri={uri}", f"train.seed={seed}", f"generate.out_dir=out{seed}")
            for seed in (1, 2)
        ]
        outputs = [p.communicate(timeout=600)[0] for p in runs]
        assert [p.returncode for p in runs] == [0, 0], outputs
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        versions = client.search_model_versions("name='vae-digits'")
        assert len(versions) == 2
        champion = client.get_model_version_by_alias("vae-digits", "champion")
        assert champion.tags["validation_status"] == "passed"
        assert client.get_run(champion.run_id).data.tags["validation_status"] == "passed"
        if store != "server":  # a file lock beside the store serialises the two decisions
            compared = sorted(v.tags["compared_with_version"] for v in versions)
            assert compared[1] == "none" and compared[0] in ("1", "2"), compared

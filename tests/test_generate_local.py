"""`vae-pipeline generate` without a Prefect API: the request runs in the command's process, never
imports Prefect, and writes the bytes the Prefect flow writes; without --out, each request gets
its own folder, from the command and from the flow alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.generate import generate
from tests.conftest import register_tiny_models
from vae_model.config import SampleRequest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return register_tiny_models(tmp_path_factory.mktemp("registry"), {"cond": True})


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env(cwd: Path, store: str, api: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"MLFLOW_TRACKING_URI": store, "PREFECT_HOME": str(cwd / ".prefect"), **({"PREFECT_API_URL": api} if api else {})})
    return env


def _command(cwd: Path, store: str, *args: str, api: str | None = None) -> subprocess.CompletedProcess:
    """The real command, in a process with no Prefect API unless `api` is given; -X importtime
    lists every module it imported on stderr."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.cli", "generate", "--model", "models:/cond@champion", *args],
                          cwd=cwd, env=_env(cwd, store, api), capture_output=True, text=True, timeout=300, check=False)


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_without_a_prefect_api_the_command_runs_in_process_and_writes_the_flows_bytes(prefect_server, store, tmp_path):
    request = ["--num-samples", "300", "--shard-size", "128", "--seed", "4", "--labels", "0,3", "--format", "parquet,png"]
    done = _command(tmp_path, store, *request, "--out", "here")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not {m for m in _imported(done.stderr) if m.split(".")[0] == "prefect"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["out_dir"] == str(tmp_path / "here") and result["rows"] == 300
    asked = SampleRequest(num_samples=300, seed=4, labels="0,3", shard_size=128)
    generate("models:/cond@champion", asked, str(tmp_path / "flow"), tracking_uri=store)
    assert _tree(tmp_path / "here") == _tree(tmp_path / "flow")
    # The same request again resumes into its folder; another one is refused there, in one line.
    assert _command(tmp_path, store, *request, "--out", "here").returncode == 0
    refused = _command(tmp_path, store, "--num-samples", "5", "--out", "here")
    assert refused.returncode == 1 and "another request" in refused.stderr and "Traceback" not in refused.stderr
    bad = _command(tmp_path, store, "--num-samples", "5", "--labels", "12")
    assert bad.returncode == 1 and "label 12 is outside 0..9" in bad.stderr and "Traceback" not in bad.stderr


def test_prefect_flag_runs_the_flow_on_the_configured_api(prefect_server, store, tmp_path):
    from prefect.client.orchestration import get_client

    done = _command(tmp_path, store, "--num-samples", "20", "--out", "via-flow", "--prefect", api=prefect_server)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prefect" in {m.split(".")[0] for m in _imported(done.stderr)}
    out = json.loads(done.stdout.strip().splitlines()[-1])["out_dir"]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert any(run.parameters.get("out_dir") == "via-flow" and run.state.is_completed() for run in runs)
    assert (Path(out) / "manifest.json").exists()


def test_without_out_each_request_gets_its_own_folder(prefect_server, store, tmp_path, monkeypatch):
    first = json.loads(_command(tmp_path, store, "--num-samples", "30", "--format", "parquet").stdout.splitlines()[-1])
    again = json.loads(_command(tmp_path, store, "--num-samples", "30", "--format", "parquet").stdout.splitlines()[-1])
    other = json.loads(_command(tmp_path, store, "--num-samples", "30", "--format", "parquet", "--seed", "1").stdout.splitlines()[-1])
    root = tmp_path / "outputs" / "cond" / "v1"
    assert Path(first["out_dir"]).parent == root and Path(first["out_dir"]).name.startswith("seed0-n30-")
    assert again["out_dir"] == first["out_dir"]  # the same request: the same folder, resumed
    assert Path(other["out_dir"]).name.startswith("seed1-n30-") and other["out_dir"] != first["out_dir"]
    # The deployment's flow, given no out_dir, names the same folder for the same request.
    monkeypatch.chdir(tmp_path)
    asked = SampleRequest(num_samples=30, formats=["parquet"])
    flow = generate("models:/cond@champion", asked, tracking_uri=store)
    assert flow["out_dir"] == first["out_dir"]
    labelled = generate("models:/cond@champion", asked.model_copy(update={"labels": "3"}), tracking_uri=store)
    assert Path(labelled["out_dir"]).parent == root and labelled["out_dir"] != first["out_dir"]


def test_sigterm_stops_a_request_after_the_shards_being_made_and_the_same_command_finishes_it(store, tmp_path):
    request = ["--num-samples", "40000", "--shard-size", "100", "--seed", "2", "--format", "png", "--out", "stopped"]
    child = subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", "--model", "models:/cond@champion", *request],
                             cwd=tmp_path, env=_env(tmp_path, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = tmp_path / "stopped" / ".shards"
    try:
        deadline = time.monotonic() + 120
        while len(list(records.glob("part-*.json"))) < 2:
            assert child.poll() is None and time.monotonic() < deadline, "generation ended before it was stopped"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: stopped by SIGTERM: the same command again finishes the request where it stopped"]
    # The shards that were not started were left: far fewer than the 400 of the request are done.
    assert len(list(records.glob("part-*.json"))) < 100 and not (tmp_path / "stopped" / "manifest.json").exists()

    done = _command(tmp_path, store, *request)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "stopped" / "manifest.json").read_text())["rows"] == 40000

"""The registered model served by MLflow itself: a real `mlflow models serve` process on
127.0.0.1 answers a request over HTTP with the bytes `vae-pipeline generate` writes for it."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from flows.request import generate_here
from tests.conftest import register_tiny_models
from vae_model.config import SampleRequest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`mlflow models serve` of models:/cond@champion; yields the store URI and the base URL."""
    root = tmp_path_factory.mktemp("served")
    store = register_tiny_models(root, {"cond": True})
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store,
           # The CLI starts uvicorn by name: the venv's bin folder must be on PATH.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/cond@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (root / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping within 120 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield {"store": store, "url": url, "root": root}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()


def test_served_model_answers_a_request_with_the_bytes_generate_writes(served, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served["store"])
    request = {"num_samples": 200, "seed": 9, "labels": "2,7", "temperature": 0.8}
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [request]})
    assert status == 200
    rows = body["predictions"]
    out = served["root"] / "written"
    generate_here("models:/cond@champion", SampleRequest(**request, formats=["parquet"]), str(out))
    written = pd.read_parquet(sorted(glob.glob(str(out / "part-*.parquet")))).sort_values("sample_id")
    assert [r["sample_id"] for r in rows] == written["sample_id"].tolist()
    assert [r["label"] for r in rows] == written["label"].tolist() == [2, 7] * 100
    assert [bytes(r["pixels"]) for r in rows] == written["pixels"].tolist()
    # The model stays loaded: the next request is answered without loading it again.
    started = time.perf_counter()
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [{"num_samples": 1000}]})
    assert status == 200 and len(body["predictions"]) == 1000 and time.perf_counter() - started < 5


def test_a_bad_request_is_a_400_naming_the_field(served):
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [{"num_samples": 3, "labels": "12"}]})
    assert status == 400 and "label 12 is outside 0..9" in body["message"]
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [{"seed": 3}]})
    assert status == 400 and "num_samples" in body["message"]
    # Checked by the SampleRequest the flow and the command take.
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [{"num_samples": 0}]})
    assert status == 400 and "num_samples: Input should be greater than or equal to 1" in body["message"]

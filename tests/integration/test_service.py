"""The service on real servers, no Docker: PostgreSQL, `mlflow server` (Postgres backend, proxied
artifacts) and `prefect server` (on Postgres) as subprocesses, the work pools, real `prefect worker`
processes and the deployments of prefect.yaml, triggered through Prefect's API."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, TINY

BIN = Path(sys.executable).parent
PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
URL_VAR = "VAE_TEST_POSTGRES_URL"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get(URL_VAR) and not PG_BINS,
        reason=f"no PostgreSQL: {URL_VAR} is unset (.ci/run sets it) and /usr/lib/postgresql/*/bin/pg_ctl is absent",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Processes:
    """Subprocesses with their logs; each is stopped by its PID (and its own process group)."""

    def __init__(self, logs: Path):
        self.logs, self.procs = logs, {}

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = (proc, log)
        return proc

    def tail(self, name: str, chars: int = 4000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]

    def wait_http(self, name: str, url: str, timeout: float = 180) -> None:
        proc = self.procs[name][0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{name} exited:\n{self.tail(name)}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        pytest.fail(f"{name} not healthy at {url} after {timeout} s:\n{self.tail(name)}")

    def stop_all(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


@pytest.fixture(scope="module")
def postgres():
    """The cluster .ci/run started, or a throwaway one started here with the distribution's binaries."""
    if url := os.environ.get(URL_VAR):
        yield url
        return
    # Not under pytest's tmp folder: the postgres user must be able to reach it.
    folder = Path(tempfile.mkdtemp(prefix="vae-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, int(subprocess.check_output(["id", "-u", "postgres"])), -1)
    port, pg = _free_port(), PG_BINS[-1]
    subprocess.run(_as_postgres([f"{pg}/initdb", "-D", f"{folder}/data", "-U", "vae", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([f"{pg}/pg_ctl", "-D", f"{folder}/data", "-l", f"{folder}/log", "-w",
                                 "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://vae@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([f"{pg}/pg_ctl", "-D", f"{folder}/data", "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def databases(postgres):
    """Fresh databases for MLflow and Prefect, dropped afterwards."""
    import sqlalchemy as sa

    base = sa.engine.make_url(postgres)
    names = {k: f"{k}_{uuid.uuid4().hex[:8]}" for k in ("mlflow", "prefect")}
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield {
            "mlflow": base.set(database=names["mlflow"]).render_as_string(hide_password=False),
            "prefect": base.set(drivername="postgresql+asyncpg", database=names["prefect"]).render_as_string(hide_password=False),
        }
    finally:
        with engine.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def _wait_run(api, run_id, processes: Processes, timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    pytest.fail(f"flow run {run_id} still {run.state.name if run.state else None} after {timeout} s:\n"
                f"{processes.tail('worker-gpu')}\n{processes.tail('worker-cpu')}")


def test_retrain_and_generate_deployments_on_real_servers(databases, tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.config import load_config

    mlflow_port, prefect_port = _free_port(), _free_port()
    mlflow_url, api_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": mlflow_url,
    }
    processes = Processes(tmp_path)
    try:
        processes.start("mlflow", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", databases["mlflow"],
            "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
            "--workers", "1"], {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        processes.start("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                        {**env, "PREFECT_API_DATABASE_CONNECTION_URL": databases["prefect"]})
        processes.wait_http("prefect", f"{api_url}/health")
        processes.wait_http("mlflow", f"{mlflow_url}/health")

        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as api:
            for pool in ("vae-cpu", "vae-gpu"):
                api.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=300)
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
            worker_env = {**env, "VAE_PIPELINE_WORKDIR": str(work), "PREFECT_WORKER_QUERY_SECONDS": "2"}
            for pool in ("vae-gpu", "vae-cpu"):
                processes.start(f"worker-{pool[4:]}", [str(BIN / "prefect"), "worker", "start", "--pool", pool,
                                                       "--type", "process"], worker_env)

            # No GPU here: the retrain deployment's worker is a process worker like any other.
            config = load_config(None, [*TINY, "train.device=cpu"]).to_dict()
            first = [run_deployment("vae-pipeline/retrain", parameters={"config": config}, timeout=0) for _ in range(2)]
            states = sorted(_wait_run(api, r.id, processes).state.type.value for r in first)
            assert states == ["CANCELLED", "COMPLETED"], f"{states}\n{processes.tail('worker-gpu')}"

            mlflow = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
            assert str(mlflow.get_model_version_by_alias("vae-digits", "champion").version) == "1"
            assert str(mlflow.get_model_version_by_alias("vae-digits", "challenger").version) == "1"
            assert json.loads((work / "outputs" / "samples" / "vae-digits" / "v1" / "manifest.json").read_text())["model_version"] == "1"
            assert list((tmp_path / "artifacts").rglob("weights.pt")), "artifacts go through the server's proxy"

            gen = run_deployment("generate/generate", timeout=0, parameters={
                "model_uri": "models:/vae-digits@champion", "num_samples": 30, "seed": 5, "out_dir": str(tmp_path / "on-demand")})
            assert _wait_run(api, gen.id, processes).state.is_completed(), processes.tail("worker-cpu")
            manifest = json.loads((tmp_path / "on-demand" / "manifest.json").read_text())
            assert manifest["seed"] == 5 and manifest["model_version"] == "1"
            shards = sorted(str(p) for p in (tmp_path / "on-demand").glob("part-*.parquet"))
            assert pq.read_table(shards).num_rows == 30 and len(list((tmp_path / "on-demand").rglob("*.png"))) >= 30

            worse = load_config(None, [*TINY, "train.device=cpu", "train.epochs=1"]).to_dict()
            second = run_deployment("vae-pipeline/retrain", parameters={"config": worse}, timeout=0)
            assert _wait_run(api, second.id, processes).state.is_completed(), processes.tail("worker-gpu")
            assert str(mlflow.get_model_version_by_alias("vae-digits", "champion").version) == "1"
            assert str(mlflow.get_model_version_by_alias("vae-digits", "challenger").version) == "2"
            tags = mlflow.get_model_version("vae-digits", "2").tags
            assert tags["champion_decision"] == "kept" and tags["compared_with_version"] == "1"
            assert float(tags["challenger_heldout_elbo"]) < float(tags["champion_heldout_elbo"])
    finally:
        processes.stop_all()

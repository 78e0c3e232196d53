"""The service on real servers, no Docker, set up as docker/compose.yaml sets it up: PostgreSQL with
docker/postgres-init.sql's role per service, `mlflow db upgrade` then `mlflow server` with the
basic-auth app (Postgres backend, proxied artifacts), `prefect server` with an API auth string, as
subprocesses; the work pools, the automations, real `prefect worker --with-healthcheck` processes
holding the credentials, and the deployments of prefect.yaml, triggered through Prefect's API."""

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
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT

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


ROLES = ("prefect", "mlflow")


def _psql(superuser_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import sqlalchemy as sa

    psql = shutil.which("psql") or f"{PG_BINS[-1]}/psql"
    url = sa.engine.make_url(superuser_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", url, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.fixture(scope="module")
def databases(postgres):
    """docker/postgres-init.sql run as the compose stack runs it: a login role and a database per
    service, the passwords read from the environment; dropped afterwards. Yields how each service
    reaches its database: a URL without a password, and the password for the environment."""
    import sqlalchemy as sa

    # One statement per -c: DROP DATABASE cannot run in the transaction a multi-statement string is.
    drop = [a for r in ROLES for a in ("-c", f"DROP DATABASE IF EXISTS {r} WITH (FORCE)", "-c", f"DROP ROLE IF EXISTS {r}")]
    passwords = {f"{r.upper()}_DB_PASSWORD": f"{r}-{os.urandom(6).hex()}" for r in ROLES}
    _psql(postgres, *drop)
    done = _psql(postgres, "-f", str(ROOT / "docker" / "postgres-init.sql"), env=passwords)
    assert done.returncode == 0, done.stderr
    base = sa.engine.make_url(postgres)
    try:
        yield {role: {"url": base.set(username=role, password=None, database=role), "password": passwords[f"{role.upper()}_DB_PASSWORD"]}
               for role in ROLES}
    finally:
        _psql(postgres, *drop)


def _status(url: str, data: bytes | None = None, auth: str | None = None) -> int:
    """HTTP status of a request, with HTTP basic auth (user:password) or none."""
    import base64

    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _digits_parquet(path: Path) -> Path:
    """The team's data as the retrain preset reads it from the worker's environment: scikit-learn's
    digits as a Parquet file of pixel columns and labels."""
    import numpy as np
    import pyarrow as pa
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.data * (255 / 16)).astype(np.uint8)
    columns = {f"p{i}": pa.array(pixels[:, i]) for i in range(pixels.shape[1])}
    pq.write_table(pa.table({**columns, "label": pa.array(digits.target.astype(np.int64))}), path)
    return path


def _wait_run(api, run_id, processes: Processes, timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    pytest.fail(f"flow run {run_id} still {run.state.name if run.state else None} after {timeout} s:\n"
                f"{processes.tail('worker-gpu')}\n{processes.tail('worker-cpu')}")


def test_retrain_and_generate_deployments_on_real_servers(databases, tmp_path, monkeypatch):
    import configparser

    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows import automations

    mlflow_port, prefect_port = _free_port(), _free_port()
    mlflow_url, api_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    work = tmp_path / "work"
    work.mkdir()
    # The secrets of docker/.env.example, each passed through the environment only.
    prefect_auth = f"vae:{os.urandom(8).hex()}"
    mlflow_user, mlflow_password = "vae-admin", os.urandom(10).hex()
    env = {
        **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": mlflow_url,
    }
    clients = {**env, "PREFECT_API_AUTH_STRING": prefect_auth, "MLFLOW_TRACKING_USERNAME": mlflow_user,
               "MLFLOW_TRACKING_PASSWORD": mlflow_password}
    mlflow_db = databases["mlflow"]
    store = mlflow_db["url"].render_as_string(hide_password=False)
    auth_ini = configparser.ConfigParser()
    auth_ini.read(ROOT / "docker" / "mlflow-auth.ini")
    auth_ini["mlflow"]["database_uri"] = store
    with open(tmp_path / "mlflow-auth.ini", "w") as f:
        auth_ini.write(f)
    mlflow_env = {**env, "PGPASSWORD": mlflow_db["password"], "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                  "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "mlflow-auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": mlflow_user,
                  "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    prefect_db = databases["prefect"]
    prefect_env = {**env, "PREFECT_SERVER_API_AUTH_STRING": prefect_auth, "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
                   "PREFECT_SERVER_DATABASE_HOST": prefect_db["url"].host, "PREFECT_SERVER_DATABASE_PORT": str(prefect_db["url"].port),
                   "PREFECT_SERVER_DATABASE_USER": "prefect", "PREFECT_SERVER_DATABASE_NAME": "prefect",
                   "PREFECT_SERVER_DATABASE_PASSWORD": prefect_db["password"]}
    processes = Processes(tmp_path)
    try:
        # compose.yaml's mlflow-migrate step: the schema first, on the service's own role.
        migrated = subprocess.run([str(BIN / "mlflow"), "db", "upgrade", store], env=mlflow_env,
                                  capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        processes.start("mlflow", [
            str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", store,
            "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
            "--workers", "1"], mlflow_env)
        processes.start("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                        prefect_env)
        processes.wait_http("prefect", f"{api_url}/health")
        processes.wait_http("mlflow", f"{mlflow_url}/health")

        # Without credentials, or with wrong ones, both servers refuse; with them they answer.
        search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _status(search) == 401 and _status(search, auth=f"{mlflow_user}:wrong-password") == 401
        assert _status(search, auth=f"{mlflow_user}:{mlflow_password}") == 200
        flows_filter = f"{api_url}/flows/filter"
        assert _status(flows_filter, b"{}") == 401 and _status(flows_filter, b"{}", auth="vae:wrong") == 401
        assert _status(flows_filter, b"{}", auth=prefect_auth) == 200
        for name, value in clients.items():
            monkeypatch.setenv(name, value)

        with temporary_settings({PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: prefect_auth}), \
                get_client(sync_client=True) as api:
            for pool in ("vae-cpu", "vae-gpu"):
                api.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=ROOT, env=clients,
                                      capture_output=True, text=True, timeout=300)
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
            assert automations.apply("https://hooks.example.invalid/T0/B0/x") == [automations.CRASH_UNRESPONSIVE,
                                                                                   automations.NOTIFY_FAILURES]
            # The GPU host's worker: the data source of the retrain preset is in its environment.
            worker_env = {**clients, "VAE_PIPELINE_WORKDIR": str(work), "PREFECT_WORKER_QUERY_SECONDS": "2",
                          "VAE_RETRAIN_DATA_KIND": "parquet", "VAE_RETRAIN_DATA_PATH": str(_digits_parquet(tmp_path / "digits.parquet"))}
            health = {}
            for pool in ("vae-gpu", "vae-cpu"):
                health[pool] = _free_port()
                processes.start(f"worker-{pool[4:]}", [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
                                                       "--with-healthcheck"], {**worker_env, "PREFECT_WORKER_WEBSERVER_PORT": str(health[pool])})
            for pool, port in health.items():
                processes.wait_http(f"worker-{pool[4:]}", f"http://127.0.0.1:{port}/health", timeout=120)

            # The preset as deployed, with only what differs: no GPU here, a tiny model, a cheap evaluation
            # and gates loose enough for it; data, recipe and the remaining gates come from configs/retrain.yaml.
            tiny = {"model": {"latent_dim": 4, "hidden_dim": 32, "hidden_layers": 1, "prior_components": 5},
                    "train": {"device": "cpu", "epochs": 3, "resume": False},
                    "evaluate": {"classifier_steps": 50, "max_samples": 200},
                    "validate": {"max_fcd_ratio": 1e6, "min_precision": 0.0, "min_recall": 0.0, "min_coverage": 0.0,
                                 "min_label_agreement": 0.0},
                    "generate": {"num_samples": 40}}
            first = [run_deployment("vae-pipeline/retrain", parameters={"config": tiny}, timeout=0) for _ in range(2)]
            states = sorted(_wait_run(api, r.id, processes).state.type.value for r in first)
            assert states == ["CANCELLED", "COMPLETED"], f"{states}\n{processes.tail('worker-gpu')}"

            mlflow = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
            assert str(mlflow.get_model_version_by_alias("vae-retrain", "champion").version) == "1"
            assert str(mlflow.get_model_version_by_alias("vae-retrain", "challenger").version) == "1"
            [run] = mlflow.search_runs([mlflow.get_experiment_by_name("vae-pipeline-retrain").experiment_id])
            # Data from the worker's environment, the preset's recipe and gates, the run's overrides.
            assert run.data.params["data.kind"] == "parquet" and run.data.params["data.path"] == worker_env["VAE_RETRAIN_DATA_PATH"]
            assert run.data.params["model.conditional"] == "True" and run.data.params["validate.max_exact_copy_rate"] == "0.0"
            assert run.data.params["train.epochs"] == "3" and "eval_fcd" in run.data.metrics
            assert json.loads((work / "outputs" / "samples" / "vae-retrain" / "v1" / "manifest.json").read_text())["model_version"] == "1"
            assert list((tmp_path / "artifacts").rglob("weights.pt")), "artifacts go through the server's proxy"

            gen = run_deployment("generate/generate", timeout=0, parameters={
                "model_uri": "models:/vae-retrain@champion", "request": {"num_samples": 30, "seed": 5}, "out_dir": str(tmp_path / "on-demand")})
            assert _wait_run(api, gen.id, processes).state.is_completed(), processes.tail("worker-cpu")
            manifest = json.loads((tmp_path / "on-demand" / "manifest.json").read_text())
            assert manifest["seed"] == 5 and manifest["model_version"] == "1"
            shards = sorted(str(p) for p in (tmp_path / "on-demand").glob("part-*.parquet"))
            assert pq.read_table(shards).num_rows == 30 and len(list((tmp_path / "on-demand").rglob("*.png"))) >= 30

            # A weaker model registers as challenger and the champion stays...
            worse = {**tiny, "train": {**tiny["train"], "epochs": 1}}
            second = run_deployment("vae-pipeline/retrain", parameters={"config": worse}, timeout=0)
            assert _wait_run(api, second.id, processes).state.is_completed(), processes.tail("worker-gpu")
            assert str(mlflow.get_model_version_by_alias("vae-retrain", "champion").version) == "1"
            assert str(mlflow.get_model_version_by_alias("vae-retrain", "challenger").version) == "2"
            tags = mlflow.get_model_version("vae-retrain", "2").tags
            assert tags["champion_decision"] == "kept" and tags["compared_with_version"] == "1"
            assert float(tags["challenger_heldout_elbo"]) < float(tags["champion_heldout_elbo"])

            # ...and one the preset's sample gates refuse is not registered at all.
            gated = {**tiny, "validate": {**tiny["validate"], "max_fcd_ratio": 1e-6}}
            third = _wait_run(api, run_deployment("vae-pipeline/retrain", parameters={"config": gated}, timeout=0).id, processes)
            assert third.state.is_failed() and "FCD over its real floor" in third.state.message, third.state.message
            assert {str(v.version) for v in mlflow.search_model_versions("name='vae-retrain'")} == {"1", "2"}
    finally:
        processes.stop_all()

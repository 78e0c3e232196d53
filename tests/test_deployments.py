"""prefect.yaml applied to a real Prefect server, and the Docker files checked by the real Compose
and hadolint binaries (no Docker engine needed)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
DOCKER = ROOT / "docker"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: install the dev extra (pip install -e '.[dev]')")
    return str(path)


def test_compose_file_is_valid_with_the_example_env():
    done = subprocess.run(
        [_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "--env-file", str(DOCKER / ".env.example"),
         "--profile", "gpu", "config", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    services = subprocess.run(
        [_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "--env-file", str(DOCKER / ".env.example"),
         "--profile", "gpu", "config", "--services"], capture_output=True, text=True, timeout=60).stdout.split()
    assert set(services) == {"postgres", "prefect-server", "mlflow", "worker-cpu", "worker-gpu"}


def test_compose_refuses_to_start_without_a_database_password():
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    done = subprocess.run([_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "--env-file", os.devnull,
                           "config", "-q"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_passes_hadolint_and_runs_as_non_root(dockerfile):
    done = subprocess.run([_tool("hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (DOCKER / dockerfile).read_text().splitlines()
    assert [l for l in lines if l.startswith("USER ")][-1] != "USER root"
    assert all(":" in l and ":latest" not in l for l in lines if l.startswith("FROM "))


@pytest.fixture(scope="module")
def deployments(prefect_server):
    """Apply prefect.yaml with the real `prefect deploy` and read the deployments back."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as api:
        names = {p.name for p in api.read_work_pools()}
        for pool in {"vae-cpu", "vae-gpu"} - names:
            api.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with get_client(sync_client=True) as api:
        return {d.name: d for d in api.read_deployments()}


def test_retrain_runs_nightly_on_a_cron_schedule(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    retrain = deployments["retrain"]
    assert retrain.entrypoint == "flows.pipeline.pipeline" and retrain.work_pool_name == "vae-gpu"
    [schedule] = retrain.schedules
    assert schedule.active and isinstance(schedule.schedule, CronSchedule)
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"


def test_retrain_never_overlaps_and_generate_requests_queue(deployments):
    retrain, generate = deployments["retrain"], deployments["generate"]
    assert retrain.global_concurrency_limit.limit == 1
    assert retrain.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert generate.global_concurrency_limit.limit == 2
    assert generate.concurrency_options.collision_strategy.value == "ENQUEUE"


def test_deployment_parameters_are_the_flows_own(deployments):
    from flows.generate import generate
    from flows.pipeline import pipeline
    from vae_model.config import PipelineConfig

    gen = deployments["generate"]
    assert gen.entrypoint == "flows.generate.generate" and gen.work_pool_name == "vae-cpu" and not gen.schedules
    assert {"model_uri", "num_samples", "seed", "labels"} <= set(gen.parameters)
    assert "out_dir" not in gen.parameters  # a folder per request (flows.request.default_out_dir), not one shared
    assert set(gen.parameters) <= set(inspect.signature(generate.fn).parameters)
    assert set(deployments["retrain"].parameters) <= set(inspect.signature(pipeline.fn).parameters)
    assert PipelineConfig.model_validate(deployments["retrain"].parameters["config"]).train.device == "cuda"
    # Workers run in $VAE_PIPELINE_WORKDIR, resolved on the worker, never the deploying machine's path.
    for d in deployments.values():
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $VAE_PIPELINE_WORKDIR }}"}}]

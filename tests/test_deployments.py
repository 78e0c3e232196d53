"""prefect.yaml applied to a real Prefect server, and the Docker files checked by the real Compose
and hadolint binaries (no Docker engine needed)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
DOCKER = ROOT / "docker"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: install the dev extra (pip install -e '.[dev]')")
    return str(path)


def _compose(*args: str, env_file: str = ".env.example", file: str = "compose.yaml",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # Compose prefers the shell's variables to the env file's; the tests' own (MLFLOW_TRACKING_URI,
    # PREFECT_API_URL, ...) must not leak into the files it renders.
    return subprocess.run([_tool("docker-compose"), "-f", str(DOCKER / file), "--env-file", str(DOCKER / env_file),
                           "--profile", "gpu", *args], capture_output=True, text=True, timeout=60,
                          env=env if env is not None else _bare_env())


def _bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}


def _services(file: str = "compose.yaml", env_file: str = ".env.example") -> dict[str, dict]:
    done = _compose("config", "--format", "json", file=file, env_file=env_file)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]


def _secrets(env_file: str = ".env.example") -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (DOCKER / env_file).read_text().splitlines()
             if "=" in line and not line.startswith("#"))
    return {k: v for k, v in pairs if "PASSWORD" in k or "AUTH_STRING" in k or "SECRET" in k}


@pytest.mark.parametrize(("file", "env_file"), [("compose.yaml", ".env.example"),
                                                ("compose.worker.yaml", ".env.worker.example")])
def test_compose_files_are_valid_with_their_example_env(file, env_file):
    done = _compose("config", "-q", file=file, env_file=env_file)
    assert done.returncode == 0, done.stderr
    expected = ({"postgres", "prefect-server", "mlflow-migrate", "mlflow", "worker-cpu", "worker-gpu"}
                if file == "compose.yaml" else {"worker-cpu", "worker-gpu"})
    assert set(_services(file, env_file)) == expected


@pytest.mark.parametrize("secret", ["POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD",
                                    "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD",
                                    "MLFLOW_FLASK_SERVER_SECRET_KEY"])
def test_compose_refuses_to_start_without_each_secret(secret):
    done = subprocess.run([_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "--env-file", os.devnull,
                           "config", "-q"], capture_output=True, text=True, timeout=60,
                          env={**_bare_env(), **{k: "x" for k in _secrets() if k != secret}})
    assert done.returncode != 0 and secret in done.stderr


def test_worker_host_needs_only_the_worker_credentials():
    gpu = _services("compose.worker.yaml", ".env.worker.example")["worker-gpu"]
    env = gpu["environment"]
    assert env["PREFECT_API_URL"] == "http://servers.internal:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://servers.internal:5000"
    assert {"PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env)
    assert not any("DB_PASSWORD" in k or k == "POSTGRES_PASSWORD" for k in env)
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    [data] = [v for v in gpu["volumes"] if v["target"] == "/data"]
    assert data["type"] == "bind" and data["source"] == "/srv/vae-data" and data["read_only"]
    assert env["VAE_RETRAIN_DATA_PATH"].startswith("/data/")


def test_secrets_reach_services_only_through_their_environment():
    secrets = _secrets()
    services = _services()
    for name, service in services.items():
        visible = json.dumps([service.get("command"), service.get("entrypoint"), service.get("healthcheck")])
        leaked = [k for k, v in secrets.items() if v in visible]
        assert not leaked, f"{name} shows {leaked} on a command line"
    env = {name: service.get("environment", {}) for name, service in services.items()}
    assert env["prefect-server"]["PREFECT_SERVER_DATABASE_PASSWORD"] == secrets["PREFECT_DB_PASSWORD"]
    assert env["mlflow"]["PGPASSWORD"] == env["mlflow-migrate"]["PGPASSWORD"] == secrets["MLFLOW_DB_PASSWORD"]
    # One database role per service, and the superuser's password only where the roles are made.
    assert [n for n, e in env.items() if secrets["POSTGRES_PASSWORD"] in e.values()] == ["postgres"]
    assert "--app-name" in services["mlflow"]["command"] and "basic-auth" in services["mlflow"]["command"]
    init = (DOCKER / "postgres-init.sql").read_text()
    for role, variable in (("prefect", "PREFECT_DB_PASSWORD"), ("mlflow", "MLFLOW_DB_PASSWORD")):
        assert f"CREATE DATABASE {role} OWNER {role};" in init and variable in init
        assert variable in env["postgres"]


def _dockerfile_facts(path: Path) -> dict:
    """The folders its RUN lines create, who they are chown'ed to, its users' uids and its last USER."""
    text = (DOCKER / path).read_text().replace("\\\n", " ")
    made, owned, uids = set(), {}, {}
    for line in text.splitlines():
        if not line.startswith("RUN "):
            continue
        for command in line[4:].split("&&"):
            words = shlex.split(command)
            if words[:2] == ["mkdir", "-p"]:
                made.update(words[2:])
            elif words[:1] == ["chown"]:
                owned.update(dict.fromkeys(words[2:], words[1]))
            elif words[:1] == ["useradd"]:
                uids[words[-1]] = words[words.index("--uid") + 1]
    user = [l.split()[1] for l in text.splitlines() if l.startswith("USER ")][-1]
    return {"made": made, "owned": owned, "uids": uids, "user": user}


@pytest.mark.parametrize(("file", "env_file"), [("compose.yaml", ".env.example"),
                                                ("compose.worker.yaml", ".env.worker.example")])
def test_every_volume_target_exists_in_the_image_and_belongs_to_its_user(file, env_file):
    # Docker seeds a new named volume from the image's folder: one the image lacks becomes a
    # root-owned volume that the services' uid 10001 cannot write.
    checked = 0
    for name, service in _services(file, env_file).items():
        if "build" not in service:
            continue
        facts = _dockerfile_facts(Path(service["build"]["dockerfile"]).relative_to("docker"))
        user_uid = facts["user"].split(":")[0]
        for volume in service.get("volumes", []):
            if volume["type"] != "volume":
                continue
            target = volume["target"]
            assert target in facts["made"], f"{name}: {target} is not created in {service['build']['dockerfile']}"
            owner = facts["owned"].get(target, "root").split(":")[0]
            assert facts["uids"].get(owner, owner) == user_uid, f"{name}: {target} belongs to {owner}, not uid {user_uid}"
            checked += 1
    assert checked >= 2


def test_dockerfile_facts_read_the_images_folders():
    facts = _dockerfile_facts(Path("Dockerfile.cpu"))
    assert {"/work", "/mlartifacts"} <= facts["made"] and facts["owned"]["/mlartifacts"] == "vae:vae"
    assert facts["uids"] == {"vae": "10001"} and facts["user"] == "10001:10001"


def _lock(name: str = "constraints.txt") -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = [l for l in (DOCKER / name).read_text().splitlines() if l and not l.startswith("#")]
    return {canonicalize_name(l.split("==")[0]): l.split("==")[1] for l in lines}


def test_images_install_the_lock_which_satisfies_pyproject():
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = _lock()
    for dependency in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dependency)
        pinned = lock.get(canonicalize_name(req.name))
        assert pinned and req.specifier.contains(pinned), f"{dependency}: lock has {pinned}"
    # The tests run the versions the images install, and prefect.yaml names the same Prefect.
    for name in ("prefect", "mlflow", "torch"):
        assert version(name).split("+")[0] == lock[name], name
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert prefect_yaml["prefect-version"] == lock["prefect"]
    assert not set(_lock()) & set(_lock("constraints-cuda.txt"))


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dependencies_install_before_the_code_is_copied(dockerfile):
    lines = (DOCKER / dockerfile).read_text().splitlines()
    lock = _lock()
    deps = next(i for i, l in enumerate(lines) if "-r docker/constraints.txt" in l)
    code = next(i for i, l in enumerate(lines) if l.startswith("COPY vae_model"))
    assert deps < code
    assert all(l.startswith("COPY docker/constraints") for l in lines[:deps] if l.startswith("COPY"))
    assert any("--no-deps" in l for l in lines[code:])
    for pin in re.findall(r"\b(torch|torchvision)==([0-9][0-9.]*[0-9])", "\n".join(lines)):
        assert lock[pin[0]] == pin[1]
    # BuildKit reads the ignore file beside the Dockerfile: everything out but what the image needs.
    ignore = [l for l in (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines() if l and l[0] != "#"]
    assert ignore[0] == "*" and not any(".env" in l or l == "!docker/" for l in ignore)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_passes_hadolint_and_runs_as_non_root(dockerfile):
    done = subprocess.run([_tool("hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (DOCKER / dockerfile).read_text().splitlines()
    assert [l for l in lines if l.startswith("USER ")][-1] != "USER root"
    assert all(":" in l and ":latest" not in l for l in lines if l.startswith("FROM "))


def test_servers_run_the_workers_image_so_client_and_server_versions_match():
    services = _services()
    assert services["prefect-server"]["image"] == services["mlflow"]["image"] == services["worker-cpu"]["image"]
    assert services["mlflow-migrate"]["image"] == services["mlflow"]["image"]
    assert services["mlflow-migrate"]["command"][:3] == ["mlflow", "db", "upgrade"]
    assert services["mlflow"]["depends_on"]["mlflow-migrate"]["condition"] == "service_completed_successfully"


def test_workers_report_health_and_stop_gracefully_and_every_service_rotates_logs():
    services = _services()
    for name in ("worker-cpu", "worker-gpu"):
        worker = services[name]
        assert "--with-healthcheck" in worker["command"] and "8080/health" in " ".join(worker["healthcheck"]["test"])
        assert worker["init"] is True
        minutes, _, rest = worker["stop_grace_period"].partition("m")
        assert int(minutes or 0) >= 2, worker["stop_grace_period"]
    for name, service in services.items():
        assert service["logging"]["options"]["max-size"] and service["logging"]["options"]["max-file"], name


def test_prefect_server_settings_are_real_prefect_settings(monkeypatch):
    # The names are checked by Prefect's own settings model: a misspelt one would be ignored.
    from prefect.settings import Settings

    for name, value in _services()["prefect-server"]["environment"].items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    vacuum = settings.server.services.db_vacuum
    assert {"flow_runs", "events"} <= vacuum.enabled_vacuum_types
    assert vacuum.retention_period.days == 30 and settings.server.events.retention_period.days == 30
    assert settings.server.api.auth_string.get_secret_value() == _secrets()["PREFECT_API_AUTH_STRING"]
    assert settings.server.database.user == "prefect" and settings.server.database.password is not None


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
    from vae_model.config import SampleRequest

    gen = deployments["generate"]
    assert gen.entrypoint == "flows.generate.generate" and gen.work_pool_name == "vae-cpu" and not gen.schedules
    # No out_dir: a folder per request (flows.request.default_out_dir), not one shared.
    assert set(gen.parameters) == {"model_uri", "request"}
    assert {"num_samples", "seed", "labels"} <= set(gen.parameters["request"])
    assert SampleRequest.model_validate(gen.parameters["request"]) == SampleRequest(num_samples=1000)
    assert set(gen.parameters) <= set(inspect.signature(generate.fn).parameters)
    assert set(deployments["retrain"].parameters) <= set(inspect.signature(pipeline.fn).parameters)
    # Workers run in $VAE_PIPELINE_WORKDIR, resolved on the worker, never the deploying machine's path.
    for d in deployments.values():
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $VAE_PIPELINE_WORKDIR }}"}}]


def test_retrain_deployment_runs_the_preset_with_its_data_gates_and_gpu(deployments, monkeypatch):
    from flows.config import resolve_config

    retrain = deployments["retrain"]
    assert retrain.parameters == {"preset": "retrain", "config": {}}
    monkeypatch.setenv("VAE_RETRAIN_DATA_KIND", "parquet")
    monkeypatch.setenv("VAE_RETRAIN_DATA_PATH", "/data/train.parquet")
    # Prefect merges a run's parameters over the deployment's at the top level: a run that sets
    # `config` replaces {} and is then deep-merged over the preset, keeping the rest of it.
    cfg = resolve_config(**{**retrain.parameters, "config": {"train": {"epochs": 3}}})
    assert (cfg.data.kind, cfg.data.path) == ("parquet", "/data/train.parquet")
    assert cfg.train.epochs == 3 and cfg.train.device == "cuda" and cfg.evaluate.enabled
    v = cfg.validate_
    assert v.min_elbo > -1e9 and None not in (v.max_fcd_ratio, v.min_precision, v.min_recall, v.min_coverage)


def test_preset_reads_only_its_own_strings_from_the_environment(monkeypatch, tmp_path):
    from flows.config import resolve_config
    from vae_model.errors import UserError

    monkeypatch.delenv("VAE_RETRAIN_DATA_KIND", raising=False)
    monkeypatch.setenv("VAE_RETRAIN_DATA_PATH", "")
    with pytest.raises(UserError, match=r"'data.kind' is read from \$VAE_RETRAIN_DATA_KIND, which is unset"):
        resolve_config({}, "retrain")
    # A run may give the data itself; its strings are taken literally, never expanded.
    cfg = resolve_config({"data": {"kind": "digits", "path": None}, "tracking": {"experiment": "$HOME"}}, "retrain")
    assert cfg.data.kind == "digits" and cfg.data.path is None and cfg.tracking.experiment == "$HOME"
    assert cfg.validate_.min_precision == 0.8
    # A preset by path, and the config alone when no preset is named (the CLI's call).
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  epochs: 7\n  seed: 3\n")
    assert (resolve_config({"train": {"seed": 4}}, str(preset)).train.epochs, resolve_config({"train": {"seed": 4}}, str(preset)).train.seed) == (7, 4)
    assert resolve_config({"train": {"epochs": 2}}).train.epochs == 2
    with pytest.raises(UserError, match="preset 'nope': cannot read"):
        resolve_config({}, "nope")
    # `--config FILE --set ...` reads the file the same way: its own strings from the environment.
    from flows.config import load_config

    preset.write_text("data:\n  path: ${VAE_RETRAIN_DATA_PATH}/x\ntracking:\n  experiment: $$HOME\n")
    monkeypatch.setenv("VAE_RETRAIN_DATA_PATH", "/srv")
    cfg = load_config(preset, ["train.seed=4"])
    assert (cfg.data.path, cfg.tracking.experiment, cfg.train.seed) == ("/srv/x", "$HOME", 4)


def test_preset_gates_stay_measurable(monkeypatch):
    from flows.config import resolve_config
    from vae_model.errors import UserError

    monkeypatch.setenv("VAE_RETRAIN_DATA_KIND", "mnist")
    monkeypatch.setenv("VAE_RETRAIN_DATA_PATH", "/data")
    # Turning the evaluate step off would leave the preset's sample gates unmeasured: refused.
    with pytest.raises(UserError, match="validate.max_fcd_ratio"):
        resolve_config({"evaluate": {"enabled": False}}, "retrain")


def test_pipeline_flow_has_a_timeout():
    from flows.pipeline import pipeline

    assert pipeline.name == "vae-pipeline" and 3600 <= pipeline.timeout_seconds < 24 * 3600


def test_automations_are_created_on_the_prefect_server_and_updated_in_place(prefect_server):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from flows import automations

    url = "https://hooks.example.invalid/services/T000/B000/secret"
    assert automations.apply(url) == [automations.CRASH_UNRESPONSIVE, automations.NOTIFY_FAILURES]
    assert automations.apply(url) == [automations.CRASH_UNRESPONSIVE, automations.NOTIFY_FAILURES]
    with get_client(sync_client=True) as api:
        [crash] = api.read_automations_by_name(automations.CRASH_UNRESPONSIVE)
        [notify] = api.read_automations_by_name(automations.NOTIFY_FAILURES)
        block = api.read_block_document_by_name(automations.WEBHOOK_BLOCK, "custom-webhook", include_secrets=False)
    assert crash.enabled and crash.trigger.posture == "Proactive" and crash.trigger.after == {"prefect.flow-run.heartbeat"}
    assert crash.trigger.for_each == {"prefect.resource.id"} and crash.trigger.within.total_seconds() >= 90
    assert [(a.type, a.state) for a in crash.actions] == [("change-flow-run-state", StateType.CRASHED)]
    assert notify.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert [(a.type, a.block_document_id) for a in notify.actions] == [("send-notification", block.id)]
    # The URL is kept as a secret, masked by the API, and still reaches the request.
    assert url not in json.dumps(block.data, default=str)
    loaded = CustomWebhookNotificationBlock.load(automations.WEBHOOK_BLOCK)
    assert loaded._build_request_args("body", "subject")["url"] == url
    # No webhook configured: no notification automation left behind.
    assert automations.apply(None) == [automations.CRASH_UNRESPONSIVE]
    with get_client(sync_client=True) as api:
        assert not api.read_automations_by_name(automations.NOTIFY_FAILURES)
        assert len(api.read_automations_by_name(automations.CRASH_UNRESPONSIVE)) == 1

"""The main job: ingest -> train -> validate -> evaluate -> register -> generate, as one Prefect flow.

The evaluate step scores samples drawn from the trained model before it is registered, so that
its optional thresholds (validate.max_exact_copy_rate, validate.max_fcd, ...) block registration
exactly as the ELBO gate does.

Without a Prefect API (PREFECT_API_URL unset) the command runs the same steps in its own process
(`run_steps(cfg, as_tasks=False)`): a temporary Prefect server would cost a run seconds and keep
no record once it stops; the MLflow run is the record either way.

A run names a preset (configs/<name>.yaml, or a YAML path) and gives only the keys that differ from
it, deep-merged over it: the nightly `retrain` deployment keeps its preset, GPU and gates when a
run changes one setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Failed, State

from flows import tracking
from flows.config import PipelineConfig, resolve_config
from flows.evaluate import draw_samples, evaluate
from flows.generate import generate
from flows.ingest import ingest
from flows.request import generate_here
from flows.register import register
from flows.train import train
from flows.validate import validate
from vae_model.atomic import check_writable_dir
from vae_model.errors import UserError

# A retrain that hangs would hold the deployment's one slot (CANCEL_NEW) and cancel every later
# night's run: after this long it fails instead. Long enough for the presets on one GPU, or on CPU
# for the quality presets (README); VAE_PIPELINE_TIMEOUT_SECONDS for longer recipes.
TIMEOUT_SECONDS = float(os.environ.get("VAE_PIPELINE_TIMEOUT_SECONDS", 6 * 3600))


class GateRefused(UserError):
    """The model failed a quality gate: nothing was registered."""


@flow(name="vae-pipeline", timeout_seconds=TIMEOUT_SECONDS)
def pipeline(config: dict[str, Any] | None = None, preset: str | None = None) -> dict[str, Any] | State:
    """Train, gate, register and sample a VAE as the config says.

    config: the whole config; with `preset`, only the keys that differ from the preset's.
    preset: a file of configs/ by name (e.g. `retrain`) or a YAML path.
    """
    try:
        return run_steps(resolve_config(config, preset), as_tasks=True)
    except GateRefused as refused:
        return Failed(message=str(refused))


def run_steps(cfg: PipelineConfig, as_tasks: bool) -> dict[str, Any]:
    """The job's steps in order, as Prefect tasks of the flow run or as plain calls in this process."""
    step = (lambda task: task) if as_tasks else (lambda task: task.fn)
    # Checked before any work so that a bad setting costs seconds and registers nothing.
    check_writable_dir(cfg.generate.out_dir, "generate.out_dir")
    run_id = tracking.start_run(cfg.tracking, run_name=f"{cfg.data.kind}-seed{cfg.train.seed}")
    try:
        data = step(ingest)(cfg, run_id)
        trained = step(train)(cfg, data, run_id)
        report = step(validate)(cfg, data, trained, run_id)
        if not report["passed"]:
            raise GateRefused(report["message"])
        quality = None
        if cfg.evaluate.enabled:
            quality = step(evaluate)(cfg, data, step(draw_samples)(cfg, trained, run_id), run_id)
            if not quality["passed"]:
                raise GateRefused(quality["message"])
        model = step(register)(cfg, data, trained, report)
        # Synthetic data always comes from the champion, which a weaker challenger leaves in place.
        # Each version gets its own folder, so a retrain never replaces samples someone is reading;
        # the version is pinned, so a concurrent promotion cannot put another's samples there.
        name, version, gen = model["name"], model["champion_version"], cfg.generate
        args = (f"models:/{name}/{version}", gen.request, str(Path(gen.out_dir) / name / f"v{version}"))
        if as_tasks:
            samples = generate(*args, tracking_uri=cfg.tracking.uri, dask_address=gen.dask_address,
                               dask_workers=gen.dask_workers)
        else:
            samples = generate_here(*args, tracking_uri=cfg.tracking.uri)
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return {"run_id": run_id, "data": data, "gate": report["message"], "model": model, "samples": samples,
            "evaluation": quality and quality["message"], "samples_quality": quality and quality["headline"]}

"""The main job's steps in order: ingest -> train -> validate -> evaluate -> register -> generate.

The `vae-pipeline` flow (flows/pipeline.py) runs them as Prefect tasks. Without a Prefect API the
command runs them here as plain calls: a temporary Prefect server would cost a run seconds and
keep no record once it stops, and this module does not import Prefect (~0.7 s); the MLflow run is
the record either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows import stopping, tracking
from flows.config import PipelineConfig
from flows.evaluate import draw_samples, evaluate
from flows.ingest import ingest
from flows.register import register
from flows.request import generate_here
from flows.train import train
from flows.validate import validate
from vae_model.atomic import check_writable_dir
from vae_model.errors import UserError


class GateRefused(UserError):
    """The model failed a quality gate: nothing was registered."""


def _unless_stopped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, which first stops where a signal asked the command to (flows.stopping)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        stopping.check()
        return fn(*args, **kwargs)

    return call


def run_steps(cfg: PipelineConfig, as_tasks: bool) -> dict[str, Any]:
    """The job's steps in order, as Prefect tasks of the flow run or as plain calls in this process."""
    step = (lambda task: task) if as_tasks else (lambda task: _unless_stopped(task.fn))
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
            from flows.generate import generate

            samples = generate(*args, tracking_uri=cfg.tracking.uri, dask_address=gen.dask_address,
                               dask_workers=gen.dask_workers)
        else:
            samples = _unless_stopped(generate_here)(*args, tracking_uri=cfg.tracking.uri)
    except BaseException as exc:
        tracking.end_run(run_id, tracking.status_after(exc))
        raise
    tracking.end_run(run_id, "FINISHED")
    return {"run_id": run_id, "data": data, "gate": report["message"], "model": model, "samples": samples,
            "evaluation": quality and quality["message"], "samples_quality": quality and quality["headline"]}

"""The main job: ingest -> train -> validate -> evaluate -> register -> generate, as one Prefect flow.

The evaluate step scores samples drawn from the trained model before it is registered, so that
its optional thresholds (validate.max_exact_copy_rate, validate.max_fcd, ...) block registration
exactly as the ELBO gate does.

A run names a preset (configs/<name>.yaml, or a YAML path) and gives only the keys that differ from
it, deep-merged over it: the nightly `retrain` deployment keeps its preset, GPU and gates when a
run changes one setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Failed

from flows import tracking
from flows.config import resolve_config
from flows.evaluate import draw_samples, evaluate
from flows.generate import generate
from flows.ingest import ingest
from flows.register import register
from flows.train import train
from flows.validate import validate
from vae_model.atomic import check_writable_dir

# A retrain that hangs would hold the deployment's one slot (CANCEL_NEW) and cancel every later
# night's run: after this long it fails instead. Long enough for the presets on one GPU, or on CPU
# for the quality presets (README); VAE_PIPELINE_TIMEOUT_SECONDS for longer recipes.
TIMEOUT_SECONDS = float(os.environ.get("VAE_PIPELINE_TIMEOUT_SECONDS", 6 * 3600))


@flow(name="vae-pipeline", timeout_seconds=TIMEOUT_SECONDS)
def pipeline(config: dict[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
    """Train, gate, register and sample a VAE as the config says.

    config: the whole config; with `preset`, only the keys that differ from the preset's.
    preset: a file of configs/ by name (e.g. `retrain`) or a YAML path.
    """
    cfg = resolve_config(config, preset)
    # Checked before any work so that a bad setting costs seconds and registers nothing.
    check_writable_dir(cfg.generate.out_dir, "generate.out_dir")
    run_id = tracking.start_run(cfg.tracking, run_name=f"{cfg.data.kind}-seed{cfg.train.seed}")
    try:
        data = ingest(cfg, run_id)
        trained = train(cfg, data, run_id)
        report = validate(cfg, data, trained, run_id)
        if not report["passed"]:
            tracking.end_run(run_id, "FAILED")
            return Failed(message=report["message"])
        quality = None
        if cfg.evaluate.enabled:
            quality = evaluate(cfg, data, draw_samples(cfg, trained, run_id), run_id)
            if not quality["passed"]:
                tracking.end_run(run_id, "FAILED")
                return Failed(message=quality["message"])
        model = register(cfg, data, trained, report)
        # Synthetic data always comes from the champion, which a weaker challenger leaves in place.
        # Each version gets its own folder, so a retrain never replaces samples someone is reading;
        # the version is pinned, so a concurrent promotion cannot put another's samples there.
        name, version = model["name"], model["champion_version"]
        samples = generate(
            f"models:/{name}/{version}", cfg.generate.num_samples, str(Path(cfg.generate.out_dir) / name / f"v{version}"),
            seed=cfg.generate.seed, formats=cfg.generate.formats, shard_size=cfg.generate.shard_size,
            tracking_uri=cfg.tracking.uri, dask_address=cfg.generate.dask_address,
            dask_workers=cfg.generate.dask_workers, temperature=cfg.generate.temperature,
        )
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return {"run_id": run_id, "data": data, "gate": report["message"], "model": model, "samples": samples,
            "evaluation": quality and quality["message"], "samples_quality": quality and quality["headline"]}

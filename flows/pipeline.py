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
import string
from pathlib import Path
from typing import Any

import yaml
from prefect import flow
from prefect.states import Failed

from flows import tracking
from flows.evaluate import draw_samples, evaluate
from flows.generate import generate
from flows.ingest import ingest
from flows.register import register
from flows.train import train
from flows.validate import validate
from vae_model.atomic import check_writable_dir
from vae_model.config import PipelineConfig
from vae_model.errors import UserError

_UNSET = object()
# A retrain that hangs would hold the deployment's one slot (CANCEL_NEW) and cancel every later
# night's run: after this long it fails instead. Long enough for the presets on one GPU, or on CPU
# for the quality presets (README); VAE_PIPELINE_TIMEOUT_SECONDS for longer recipes.
TIMEOUT_SECONDS = float(os.environ.get("VAE_PIPELINE_TIMEOUT_SECONDS", 6 * 3600))


def preset_path(preset: str) -> Path:
    """A bare name is a file of the configs folder (VAE_PIPELINE_CONFIGS in the images, where the
    package is installed apart from its configs/); anything else is a path."""
    if "/" in preset or preset.endswith((".yaml", ".yml")):
        return Path(preset)
    folder = os.environ.get("VAE_PIPELINE_CONFIGS") or Path(__file__).resolve().parents[1] / "configs"
    return Path(folder) / f"{preset}.yaml"


def _from_environment(value: str, key: str, source: str) -> str:
    # Empty counts as unset: compose files pass an unset variable on as an empty one.
    env = {name: text for name, text in os.environ.items() if text}
    try:
        return string.Template(value).substitute(env)
    except KeyError as exc:
        raise UserError(f"{source}: config key '{key}' is read from ${exc.args[0]}, which is unset in the worker's "
                        f"environment; set it there or give '{key}' in the run's config") from None
    except ValueError as exc:
        raise UserError(f"{source}: config key '{key}': {exc} (write $$ for a literal $)") from None


def _merged(preset: Any, override: Any, key: str, source: str) -> Any:
    """`override` deep-merged over `preset`. Only the preset's own strings that no override
    replaces read ${VARIABLE}s from the environment: a run's parameters are taken literally."""
    if override is _UNSET:
        if isinstance(preset, dict):
            return {k: _merged(v, _UNSET, f"{key}{k}", source) for k, v in preset.items()}
        return _from_environment(preset, key, source) if isinstance(preset, str) else preset
    if isinstance(preset, dict) and isinstance(override, dict):
        return {k: _merged(preset.get(k, _UNSET), override.get(k, _UNSET), f"{key}{k}.", source)
                for k in {**preset, **override}}
    return override


def resolve_config(config: dict[str, Any] | None, preset: str | None = None) -> PipelineConfig:
    """The preset with `config` deep-merged over it; without a preset, `config` is the whole config."""
    if preset is None:
        return PipelineConfig.model_validate(config or {})
    path = preset_path(preset)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(f"preset {preset!r}: cannot read {path} ({exc.strerror})") from None
    if not isinstance(tree, dict):
        raise UserError(f"preset {preset!r}: {path} is not a mapping of config sections")
    return PipelineConfig.model_validate(_merged(tree, config or {}, "", str(path)))


@flow(name="vae-pipeline", timeout_seconds=TIMEOUT_SECONDS)
def pipeline(config: dict[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
    """Train, gate, register and sample a VAE as the config says.

    config: the whole config; with `preset`, only the keys that differ from the preset's.
    preset: a file of configs/ by name (e.g. `retrain`) or a YAML path.
    """
    cfg = resolve_config(config, preset)
    config = cfg.to_dict()
    # Checked before any work so that a bad setting costs seconds and registers nothing.
    check_writable_dir(cfg.generate.out_dir, "generate.out_dir")
    run_id = tracking.start_run(cfg.tracking, run_name=f"{cfg.data.kind}-seed{cfg.train.seed}")
    try:
        data = ingest(config, run_id)
        trained = train(config, data, run_id)
        report = validate(config, data, trained, run_id)
        if not report["passed"]:
            tracking.end_run(run_id, "FAILED")
            return Failed(message=report["message"])
        quality = None
        if cfg.evaluate.enabled:
            quality = evaluate(config, data, draw_samples(config, trained, run_id), run_id)
            if not quality["passed"]:
                tracking.end_run(run_id, "FAILED")
                return Failed(message=quality["message"])
        model = register(config, data, trained, report)
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

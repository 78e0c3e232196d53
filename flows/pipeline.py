"""The main job: ingest -> train -> validate -> evaluate -> register -> generate, as one Prefect flow.

The evaluate step scores samples drawn from the trained model before it is registered, so that
its optional thresholds (validate.max_exact_copy_rate, validate.max_fcd, ...) block registration
exactly as the ELBO gate does.

The steps themselves are `flows.steps.run_steps`: without a Prefect API (PREFECT_API_URL unset) the
command runs them in its own process, as plain calls, without importing Prefect.

A run names a preset (configs/<name>.yaml, or a YAML path) and gives only the keys that differ from
it, deep-merged over it: the nightly `retrain` deployment keeps its preset, GPU and gates when a
run changes one setting.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from prefect.states import Failed, State

from flows.config import resolve_config
from flows.steps import GateRefused, run_steps

# A retrain that hangs would hold the deployment's one slot (CANCEL_NEW) and cancel every later
# night's run: after this long it fails instead. Long enough for the presets on one GPU, or on CPU
# for the quality presets (README); VAE_PIPELINE_TIMEOUT_SECONDS for longer recipes.
TIMEOUT_SECONDS = float(os.environ.get("VAE_PIPELINE_TIMEOUT_SECONDS", 6 * 3600))


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

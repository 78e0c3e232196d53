"""Step 4: register the gated model and point the alias at it."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import task

from flows import tracking
from vae_model.config import PipelineConfig


@task(name="register")
def register(config: dict[str, Any], data: dict[str, Any], trained: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Register the logged model, tag the version and set the alias (the gate has passed)."""
    tracking.use(config["tracking"])
    name, alias = config["register"]["model_name"], config["register"]["alias"]
    tags = {
        "heldout_elbo": repr(report["heldout_elbo"]),
        "data_sha256": data["sha256"],
        "config_sha256": PipelineConfig.model_validate(config).sha256(),
        "validation_status": "passed",
    }
    if commit := tracking.git_commit():
        tags["git_commit"] = commit
    version = mlflow.register_model(f"models:/{trained['model_id']}", name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": str(version.version), "alias": alias, "uri": f"models:/{name}@{alias}"}

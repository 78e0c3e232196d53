"""Registered models: resolving a `models:/` URI to a version, and loading its sampler."""

from __future__ import annotations

import functools
import re
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from vae_model.weights import WEIGHTS_FILE
from vae_model.weights import load_sampler as sampler_from_file
from vae_model.errors import UserError
from vae_model.sampling import SamplerSpec

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def resolve(model_uri: str) -> dict[str, Any]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> name, version and the sampler's spec."""
    match = _URI.match(model_uri)
    if not match:
        raise UserError(f"--model {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, version = match["name"], match["alias"], match["version"]
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias '{alias}'" if alias else f"version {version}"
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise UserError(f"{model_uri}: no registered model '{name}' with {what} in {mlflow.get_registry_uri()}") from None
        raise
    return {"uri": model_uri, "name": name, "version": str(mv.version), "spec": _spec(name, str(mv.version)).to_dict()}


def _spec(name: str, version: str) -> SamplerSpec:
    weights = _weights(mlflow.get_registry_uri(), name, version)
    if weights is None:
        # Versions logged before the weights file. (Reading the MLmodel costs a process its
        # first ~0.35 s of MLflow model imports, which the weights file spares every request.)
        meta = mlflow.models.get_model_info(f"models:/{name}/{version}").metadata or {}
        return SamplerSpec(meta["latent_dim"], meta["channels"], meta["height"], meta["width"], meta.get("num_classes", 0),
                           meta.get("class_names", ()))
    return SamplerSpec.of(_load(mlflow.get_registry_uri(), name, version).cfg)


def load_sampler(name: str, version: str):
    """The version's prior and decoder, built from its weights file (never unpickled code)."""
    return _load(mlflow.get_registry_uri(), name, version)


# Both caches are keyed by the registry too: one process may talk to several (the tests do).
# Where versions keep their weights: the served model's artifact, then the decoder-and-prior
# `sampler.pt` of older versions (an artifact, or an extra file of a torch.export program).
WEIGHTS_PATHS = (f"artifacts/{WEIGHTS_FILE}", "artifacts/sampler.pt", "extra_files/sampler.pt")


@functools.lru_cache(maxsize=4)
def _weights(registry_uri: str, name: str, version: str) -> str | None:
    """The local path of the version's weights file, downloaded once per process; None for versions
    logged before it."""
    for path in WEIGHTS_PATHS:
        try:
            local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/{path}")
        except (MlflowException, OSError):
            continue
        return local
    return None


@functools.lru_cache(maxsize=4)
def _load(registry_uri: str, name: str, version: str):
    weights = _weights(registry_uri, name, version)
    if weights is None:
        # Versions logged before the weights file: their torch.export program, which maps
        # z and the one-hot label (no prior, no uniform column) to pixels.
        program = mlflow.pytorch.load_model(f"models:/{name}/{version}")
        latent_dim = _spec(name, version).latent_dim
        return lambda inputs: program(torch.cat([inputs[:, :latent_dim], inputs[:, latent_dim + 1 :]], 1))
    return sampler_from_file(weights)

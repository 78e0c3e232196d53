"""Champion/challenger comparison: the VAE's weights and training rows logged beside each registered
version, and scoring any version on one set of held-out rows, so that two models are compared on
the same examples and the same noise, and never on rows either of them trained on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from flows.config import PipelineConfig
from vae_model.data import ImageData, read_snapshot, row_hashes
from vae_model.likelihood import heldout_figures
from vae_model.model import VAE
from vae_model.weights import WEIGHTS_FILE, load_model

WEIGHTS_DIR = "vae"
TRAIN_ROWS = "train_rows.npy"


def weights_uri(model_id: str) -> str:
    """Where the logged model keeps the whole VAE (the ELBO needs the encoder): its `weights.pt`
    artifact, the file `generate` reads too. Versions registered before it logged a copy with
    their run (`runs:/<run>/vae/weights.pt`); their tags still point there."""
    return f"{mlflow.get_logged_model(model_id).artifact_location}/artifacts/{WEIGHTS_FILE}"


def load_weights(uri: str) -> VAE:
    """The VAE behind a `weights_uri` tag, loaded with weights_only (no unpickled code)."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_model(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))


def log_training_rows(rows: np.ndarray, run_id: str) -> str:
    """Log the content hashes (`row_hashes`) of the rows a model trained on; return the `runs:/` URI.
    Kept with the run rather than left to the snapshot, which a later machine may not have."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TRAIN_ROWS
        np.save(path, rows, allow_pickle=False)
        MlflowClient().log_artifact(run_id, str(path), WEIGHTS_DIR)
    return f"runs:/{run_id}/{WEIGHTS_DIR}/{TRAIN_ROWS}"


def training_rows(tags: dict[str, str], snapshot_dir: str) -> np.ndarray | None:
    """The row hashes a registered version trained on: its `train_rows_uri` artifact, else (a version
    registered before that tag) the train split of its snapshot, if that is still here; else None."""
    if uri := tags.get("train_rows_uri"):
        with tempfile.TemporaryDirectory() as tmp:
            return np.load(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp), allow_pickle=False)
    snapshot = Path(snapshot_dir) / f"{tags.get('data_sha256', '')[:16]}.parquet"
    if "data_sha256" in tags and snapshot.is_file():
        return row_hashes(read_snapshot(snapshot)[0])
    return None


def unseen(rows: np.ndarray, *trained_on: np.ndarray) -> np.ndarray:
    """Mask of `rows` that are in none of the `trained_on` hash arrays."""
    seen = {row.tobytes() for hashes in trained_on for row in hashes}
    return np.array([row.tobytes() not in seen for row in rows], dtype=bool)


def score(model: VAE, val: ImageData, config: PipelineConfig) -> float:
    """Held-out ELBO (nats per example) the way the gate measures it, with seeds from the current config."""
    return heldout_figures(model, val, config.data.binarize, config.train.seed)["heldout_elbo"]

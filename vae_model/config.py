"""The pipeline configuration: pydantic models, YAML loading and dotted `--set` overrides."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vae_model.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    kind: Literal["digits", "mnist", "fashion_mnist", "imagefolder", "parquet"] = "digits"
    path: str | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    binarize: Literal["none", "static", "dynamic"] = "none"
    image_column: str = "image"
    label_column: str = "label"
    convert: bool = False
    image_size: tuple[int, int] | None = None
    mode: Literal["L", "RGB"] | None = None
    num_classes: int | None = Field(None, ge=1)
    snapshot_dir: str = ".vae-pipeline/data"


class ModelConfig(_Section):
    arch: Literal["mlp", "conv"] = "mlp"
    conditional: bool = False
    latent_dim: int = Field(20, ge=1)
    hidden_dim: int = Field(400, ge=1)
    hidden_layers: int = Field(1, ge=1)
    activation: Literal["relu", "elu", "tanh"] = "relu"
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    learn_scale: bool = True
    # Gaussian mixture fitted to the posterior means after training, per class; 0: sample N(0, I).
    prior_components: int = Field(50, ge=0)


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    beta: float = Field(1.0, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    resume: bool = False
    checkpoint_dir: str = ".vae-pipeline/checkpoints"
    compile: bool = False
    # bf16 autocast, opt-in: on CPUs with native bf16 (AVX512-BF16, AMX) about 1.8x faster epochs at
    # the same held-out ELBO (benchmarks/train_speed.py --bf16); ignored on CPUs without it; on CUDA
    # slower than fp32 at batch 128 (benchmarks/train_cuda.py).
    bf16: bool = False
    progress: bool = True
    # Learning rate per epoch: constant, or cosine decay from lr to lr_min over the run's epochs.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(0.0, ge=0)


class ValidateConfig(_Section):
    min_elbo: float = -1e9
    iw_samples: int = Field(0, ge=0)
    max_iw_nll: float | None = None
    # Sample-based gates from the evaluate step; null leaves a check out.
    max_exact_copy_rate: float | None = Field(None, ge=0, le=1)
    max_fcd: float | None = Field(None, ge=0)
    # Relative to the real floor (held-out against training), so one threshold suits any dataset.
    max_fcd_ratio: float | None = Field(None, gt=0)
    min_precision: float | None = Field(None, ge=0, le=1)
    min_recall: float | None = Field(None, ge=0, le=1)
    min_coverage: float | None = Field(None, ge=0, le=1)
    max_dcr_train_share: float | None = Field(None, ge=0, le=1)
    min_label_agreement: float | None = Field(None, ge=0, le=1)


class EvaluateConfig(_Section):
    enabled: bool = True
    max_samples: int = Field(10000, ge=10)
    seed: int = 0
    k_precision: int = Field(3, ge=1)
    k_density: int = Field(5, ge=1)
    classifier_steps: int = Field(1000, ge=1)
    cache_dir: str = ".vae-pipeline/metrics"
    out_dir: str = ".vae-pipeline/evaluate"


class RegisterConfig(_Section):
    model_name: str = Field("vae-digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    challenger_alias: str = Field("challenger", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    # Held-out ELBO (nats per example) a challenger must gain over the champion to replace it.
    min_improvement: float = Field(0.0, ge=0)


class GenerateConfig(_Section):
    num_samples: int = Field(1000, ge=1)
    seed: int = 0
    # Scales the prior's noise: below 1 trades diversity for fidelity (recorded in the manifest).
    temperature: float = Field(1.0, gt=0)
    out_dir: str = "outputs/samples"
    formats: list[Literal["parquet", "png"]] = ["parquet", "png"]
    shard_size: int = Field(65536, ge=1)
    # Run the shards on an existing Dask cluster (scheduler address, e.g. tcp://host:8786), or
    # on a local cluster of this many single-threaded worker processes; neither: this process.
    dask_address: str | None = None
    dask_workers: int = Field(0, ge=0)

    @field_validator("formats")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one format is needed")
        return sorted(set(value))


class TrackingConfig(_Section):
    uri: str | None = None
    experiment: str = "vae-pipeline"

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        # Configs are committed and logged as run parameters: secrets belong in the environment.
        if value and re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", value):
            raise ValueError(
                "embeds a password; set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
                "(or the database's own environment variables) instead"
            )
        return value


_SAMPLE_GATES = ("max_exact_copy_rate", "max_fcd", "max_fcd_ratio", "min_precision", "min_recall",
                 "min_coverage", "max_dcr_train_share", "min_label_agreement")


def _unmeasurable(fields: list[str], needs: str) -> None:
    keys = ", ".join(f"'validate.{name}'" for name in fields)
    raise PydanticCustomError("unmeasurable_gate", "config key{s} {keys}: cannot be measured under this config; needs {needs}",
                              {"s": "s" if len(fields) > 1 else "", "keys": keys, "needs": needs})


class PipelineConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    register_: RegisterConfig = Field(RegisterConfig(), alias="register")
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _gates_can_be_measured(self) -> PipelineConfig:
        # A threshold on a figure the run never computes would pass or fail by accident: say so
        # before anything runs, naming the key that would measure it.
        v = self.validate_
        if v.max_iw_nll is not None and v.iw_samples == 0:
            _unmeasurable(["max_iw_nll"], "validate.iw_samples > 0, which measures the IW NLL (got 0)")
        sample_gates = [name for name in _SAMPLE_GATES if getattr(v, name) is not None]
        if sample_gates and not self.evaluate.enabled:
            _unmeasurable(sample_gates, "evaluate.enabled=true, the step that measures the samples (got false)")
        if v.min_label_agreement is not None and not self.model.conditional:
            _unmeasurable(["min_label_agreement"], "model.conditional=true, as only a conditional model's "
                          "samples have labels to agree with (got false)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "unmeasurable_gate":
        return f"{source}: {error['msg']}"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'"
    shown = "<hidden>" if key == "tracking.uri" else repr(error.get("input"))
    return f"{source}: config key '{key}': {error['msg']} (got {shown})"


def _parse_value(raw: str) -> Any:
    # YAML gives `--set train.epochs=3` an int and `--set data.path=null` a None, like the files.
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Set `a.b.c=value` in a nested dict; the key must already exist in the schema."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=3")
    parts = key.strip().split(".")
    fields: dict[str, Any] = PipelineConfig.model_fields
    node = tree
    for depth, part in enumerate(parts):
        names = {f.alias or name: f for name, f in fields.items()}
        if part not in names:
            raise UserError(f"--set: unknown config key '{'.'.join(parts[: depth + 1])}'")
        annotation = names[part].annotation
        last = depth == len(parts) - 1
        if last:
            node[part] = _parse_value(raw)
        else:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise UserError(f"--set: config key '{'.'.join(parts[: depth + 1])}' has no sub-keys")
            node = node.setdefault(part, {})
            fields = annotation.model_fields


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config (or the defaults), apply `--set` overrides and validate the result."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UserError(f"{path}: cannot read config file ({exc.strerror})") from None
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise UserError(f"{path}: expected a mapping of sections at the top level")
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(_describe(exc.errors()[0], source)) from None

"""The library's settings: data, model, training, gates, sampling and evaluation, as pydantic models.
The pipeline's whole config (these plus registry and tracking) and its loading are `flows.config`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
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


class ModelConfig(Section):
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


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    beta: float = Field(1.0, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    resume: bool = False
    checkpoint_dir: str = ".vae-pipeline/checkpoints"
    # A checkpoint at most this often, and after the last epoch: a killed run repeats at most this
    # much training when resumed. 0: after every epoch.
    checkpoint_every_s: float = Field(10.0, ge=0)
    # CUDA only: forward and backward replayed as CUDA graphs (vae_model.train._graphed_step);
    # ignored on CPU, where compiling the step did not pay for its compilation time.
    compile: bool = False
    # Importance samples per example in the training objective: 1 trains on the ELBO; k > 1 on the
    # IWAE bound with DReG encoder gradients (vae_model.loss.iw_objective), a tighter bound on
    # log p(x) for about k decoder passes per step.
    iw_samples: int = Field(1, ge=1)
    # bf16 autocast, opt-in: on CPUs with native bf16 (AVX512-BF16, AMX) about 1.8x faster epochs at
    # the same held-out ELBO (benchmarks/train_speed.py --bf16); ignored on CPUs without it; on CUDA
    # slower than fp32 at batch 128 (benchmarks/train_cuda.py).
    bf16: bool = False
    progress: bool = True
    # Learning rate per epoch: constant, or cosine decay from lr to lr_min over the run's epochs.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _compile_one_sample(self) -> TrainConfig:
        if self.compile and self.iw_samples > 1:
            raise PydanticCustomError("conflicting_keys", "config keys 'train.compile' and 'train.iw_samples' conflict: "
                                      "train.compile graphs the one-sample ELBO step; set train.iw_samples=1 or "
                                      "train.compile=false")
        return self


class ValidateConfig(Section):
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


class EvaluateConfig(Section):
    enabled: bool = True
    max_samples: int = Field(10000, ge=10)
    seed: int = 0
    k_precision: int = Field(3, ge=1)
    k_density: int = Field(5, ge=1)
    classifier_steps: int = Field(1000, ge=1)
    cache_dir: str = ".vae-pipeline/metrics"
    out_dir: str = ".vae-pipeline/evaluate"


class SampleRequest(Section):
    """What a generate request asks for, each default and bound once: the flow, the command, the
    served model and the pipeline's `generate` section (`GenerateConfig`) all take it."""

    num_samples: int = Field(1000, ge=1)
    seed: int = 0
    # Conditional models: "3", "0,1,2" (cycled) or "0:0.7,1:0.3" (proportions); none: every class in turn.
    labels: str | None = None
    # Scales the prior's noise: below 1 trades diversity for fidelity (recorded in the manifest).
    temperature: float = Field(1.0, gt=0)
    formats: list[Literal["parquet", "png"]] = ["parquet", "png"]
    # Samples per shard. Part of what defines the draws: shard i is seeded by the seed and i.
    shard_size: int = Field(65536, ge=1)

    @field_validator("formats")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one format is needed")
        return sorted(set(value))

    @field_validator("labels", mode="before")
    @classmethod
    def _one_label_as_text(cls, value: object) -> object:
        # YAML and `--set generate.labels=3` read a single label as a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class GenerateConfig(SampleRequest):
    out_dir: str = "outputs/samples"
    # Run the shards on an existing Dask cluster (scheduler address, e.g. tcp://host:8786), or
    # on a local cluster of this many single-threaded worker processes; neither: this process.
    dask_address: str | None = None
    dask_workers: int = Field(0, ge=0)

    @property
    def request(self) -> SampleRequest:
        """What is sampled, without where it goes or what runs it."""
        return SampleRequest(**self.model_dump(include=set(SampleRequest.model_fields)))

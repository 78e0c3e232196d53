"""The pipeline's config: the library's sections plus registry and tracking, YAML loading and
dotted `--set` overrides."""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from pathlib import Path
from typing import Any

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

from vae_model.config import (
    DataConfig,
    EvaluateConfig,
    GenerateConfig,
    ModelConfig,
    Section,
    TrainConfig,
    ValidateConfig,
)
from vae_model.errors import UserError
from vae_model.gate import SAMPLE_GATES


class RegisterConfig(Section):
    model_name: str = Field("vae-digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    challenger_alias: str = Field("challenger", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    # Held-out ELBO (nats per example) a challenger must gain over the champion to replace it.
    min_improvement: float = Field(0.0, ge=0)


class TrackingConfig(Section):
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


def _unmeasurable(fields: list[str], needs: str) -> None:
    keys = ", ".join(f"'validate.{name}'" for name in fields)
    raise PydanticCustomError("unmeasurable_gate", "config key{s} {keys}: cannot be measured under this config; needs {needs}",
                              {"s": "s" if len(fields) > 1 else "", "keys": keys, "needs": needs})


class PipelineConfig(Section):
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
        sample_gates = [name for name in SAMPLE_GATES if getattr(v, name) is not None]
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
    if error["type"] in ("unmeasurable_gate", "conflicting_keys"):
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


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A config file's mapping of sections; one line naming `what` when it cannot be read."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(f"{what}: cannot read config file {path} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise UserError(f"{what}: expected a mapping of config sections at the top level")
    return tree


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
        raise UserError(f"{source}: config key '{key}' is read from ${exc.args[0]}, which is unset in the "
                        f"environment; set it there or give '{key}' another value") from None
    except ValueError as exc:
        raise UserError(f"{source}: config key '{key}': {exc} (write $$ for a literal $)") from None


_UNSET = object()


def _merged(base: Any, override: Any, key: str, source: str) -> Any:
    """`override` deep-merged over the file's `base`. Only the file's own strings that no override
    replaces read ${VARIABLE}s from the environment: overrides are taken literally."""
    if isinstance(base, dict) and (override is _UNSET or isinstance(override, dict)):
        changes = {} if override is _UNSET else override
        return {k: _merged(base.get(k, _UNSET), changes.get(k, _UNSET), f"{key}.{k}" if key else k, source)
                for k in {**base, **changes}}
    if override is not _UNSET:
        return override
    return _from_environment(base, key, source) if isinstance(base, str) else base


def _validated(tree: dict[str, Any], source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(_describe(exc.errors()[0], source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """A YAML config (or the defaults) with `--set` overrides applied, validated."""
    changes: dict[str, Any] = {}
    for assignment in overrides or []:
        apply_override(changes, assignment)
    if path is None:
        return _validated(changes, "defaults")
    return _validated(_merged(read_yaml(Path(path), str(path)), changes, "", str(path)), str(path))


def resolve_config(config: dict[str, Any] | None, preset: str | None = None) -> PipelineConfig:
    """A deployment run's config: the preset (a file of configs/ by name, or a path) with `config`
    deep-merged over it; without a preset, `config` is the whole config."""
    if preset is None:
        return _validated(config or {}, "config")
    path = preset_path(preset)
    return _validated(_merged(read_yaml(path, f"preset {preset!r}"), config or {}, "", str(path)), str(path))

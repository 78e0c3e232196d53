"""The gates: measured figures against the `validate.*` thresholds.

The quality gate (validate step) checks the held-out likelihood, the sample gate (evaluate step)
the sample figures. Both follow one rule: a threshold left unset is no check, and a set threshold
on a figure that was not measured fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vae_model.config import ValidateConfig

# (figure, label, comparison, threshold field) of the sample gate.
_SAMPLE_CHECKS = [
    ("exact_copy_rate", "exact-copy rate", "<=", "max_exact_copy_rate"),
    ("fcd", "Fréchet classifier distance", "<=", "max_fcd"),
    ("fcd_ratio", "FCD over its real floor", "<=", "max_fcd_ratio"),
    ("precision", "precision", ">=", "min_precision"),
    ("recall", "recall", ">=", "min_recall"),
    ("coverage", "coverage", ">=", "min_coverage"),
    ("dcr_train_share", "share closer to training (DCR)", "<=", "max_dcr_train_share"),
    ("label_agreement", "label agreement", ">=", "min_label_agreement"),
]
# The thresholds that only the evaluate step can measure.
SAMPLE_GATES = tuple(field for *_, field in _SAMPLE_CHECKS)


@dataclass(frozen=True)
class Check:
    label: str
    value: float | None
    op: str
    threshold: float
    field: str

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold

    def shown(self, unit: str = "") -> str:
        return "not measured" if self.value is None else f"{self.value:.4f}{unit}"


def _checks(figures: dict[str, float], cfg: ValidateConfig, table: list[tuple[str, str, str, str]]) -> list[Check]:
    return [Check(label, figures.get(key), op, getattr(cfg, field), field)
            for key, label, op, field in table if getattr(cfg, field) is not None]


def quality_gate(metrics: dict[str, float], cfg: ValidateConfig) -> dict[str, Any]:
    """The held-out ELBO (and IW NLL, when its threshold is set) against the thresholds; the
    message gives both numbers of each failed check, or of every check when all passed."""
    checks = _checks(metrics, cfg, [
        ("heldout_elbo", "held-out ELBO", ">=", "min_elbo"), ("val_iw_nll", "held-out IW NLL", "<=", "max_iw_nll"),
    ])
    failed = [c for c in checks if not c.passed]
    message = "; ".join(
        f"{c.label} {c.shown(' nats per example')} {'is' if c.passed else 'is not'} {c.op} {c.threshold:g}"
        for c in (failed or checks)
    )
    rows = "\n".join(f"| {c.label} | {c.shown()} | {c.op} {c.threshold:g} | {'passed' if c.passed else 'FAILED'} |"
                     for c in checks)
    verdict = "failed" if failed else "passed"
    markdown = (
        f"# Quality gate: {verdict}\n\n"
        f"| check | value (nats per example) | threshold | result |\n|---|---|---|---|\n{rows}\n\n"
        f"Held-out bits per dimension: {metrics['heldout_bits_per_dim']:.4f}\n"
    )
    return {"passed": not failed, "message": f"quality gate {verdict}: {message}", "markdown": markdown}


def sample_gate(figures: dict[str, float], cfg: ValidateConfig, real: dict[str, float] | None = None) -> dict[str, Any]:
    """The evaluate step's figures against the sample thresholds. `real` (the report's real column)
    gives the FCD floor that `fcd_ratio` divides by."""
    figures = dict(figures)
    if real and "fcd" in figures and real.get("fcd", 0) > 0:
        figures["fcd_ratio"] = figures["fcd"] / real["fcd"]
    checks = _checks(figures, cfg, _SAMPLE_CHECKS)
    failed = [c for c in checks if not c.passed]
    if not checks:
        detail = "no thresholds set (validate.max_fcd_ratio, validate.min_recall, ...)"
    elif failed:
        detail = "; ".join(f"{c.label} {c.shown()} is not {c.op} {c.threshold:g} (validate.{c.field})" for c in failed)
    else:
        detail = ", ".join(f"{c.label} {c.shown()} {c.op} {c.threshold:g}" for c in checks)
    return {"passed": not failed, "message": f"sample gate {'failed' if failed else 'passed'}: {detail}",
            "checks": len(checks)}

"""Sample-based gate: evaluation figures against the optional `validate.*` thresholds."""

from __future__ import annotations

from typing import Any

from vae_model.config import ValidateConfig

# (figure, label, comparison, threshold field)
_CHECKS = [
    ("exact_copy_rate", "exact-copy rate", "<=", "max_exact_copy_rate"),
    ("fcd", "Fréchet classifier distance", "<=", "max_fcd"),
    ("fcd_ratio", "FCD over its real floor", "<=", "max_fcd_ratio"),
    ("precision", "precision", ">=", "min_precision"),
    ("recall", "recall", ">=", "min_recall"),
    ("coverage", "coverage", ">=", "min_coverage"),
    ("dcr_train_share", "share closer to training (DCR)", "<=", "max_dcr_train_share"),
    ("label_agreement", "label agreement", ">=", "min_label_agreement"),
]


def sample_gate(figures: dict[str, float], cfg: ValidateConfig, real: dict[str, float] | None = None) -> dict[str, Any]:
    """Pass unless a configured threshold is missed; a figure that was not measured cannot pass.
    `real` (the report's real column) gives the FCD floor that `fcd_ratio` divides by."""
    figures = dict(figures)
    if real and "fcd" in figures and real.get("fcd", 0) > 0:
        figures["fcd_ratio"] = figures["fcd"] / real["fcd"]
    checks = []
    for key, label, op, field in _CHECKS:
        threshold = getattr(cfg, field)
        if threshold is None:
            continue
        value = figures.get(key)
        ok = value is not None and (value <= threshold if op == "<=" else value >= threshold)
        checks.append((label, value, op, threshold, ok, field))
    failed = [c for c in checks if not c[4]]
    passed = not failed
    detail = "; ".join(
        f"{label} {'not measured' if value is None else f'{value:.4f}'} is not {op} {threshold:g} (validate.{field})"
        for label, value, op, threshold, _, field in failed
    ) or ", ".join(f"{label} {value:.4f} {op} {threshold:g}" for label, value, op, threshold, _, _ in checks)
    if not checks:
        detail = "no thresholds set (validate.max_fcd_ratio, validate.min_recall, ...)"
    return {"passed": passed, "message": f"sample gate {'passed' if passed else 'failed'}: {detail}", "checks": len(checks)}

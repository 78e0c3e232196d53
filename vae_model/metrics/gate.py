"""Sample-based gate: evaluation figures against the optional `validate.*` thresholds."""

from __future__ import annotations

from typing import Any

from vae_model.config import ValidateConfig

# (figure, label, comparison, threshold field)
_CHECKS = [
    ("exact_copy_rate", "exact-copy rate", "<=", "max_exact_copy_rate"),
    ("fcd", "Fréchet classifier distance", "<=", "max_fcd"),
    ("dcr_train_share", "share closer to training (DCR)", "<=", "max_dcr_train_share"),
    ("label_agreement", "label agreement", ">=", "min_label_agreement"),
]


def sample_gate(figures: dict[str, float], cfg: ValidateConfig) -> dict[str, Any]:
    """Pass unless a configured threshold is missed; a figure that was not measured cannot pass."""
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
    ) or f"{len(checks)} check(s) passed"
    return {"passed": passed, "message": f"sample gate {'passed' if passed else 'failed'}: {detail}", "checks": len(checks)}

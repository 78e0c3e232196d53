"""The quality gate: held-out figures against the configured thresholds."""

from __future__ import annotations

from typing import Any

from vae_model.config import ValidateConfig


def gate_decision(metrics: dict[str, float], cfg: ValidateConfig) -> dict[str, Any]:
    """Compare held-out metrics with the thresholds; the message gives both numbers of each check."""
    checks = [(
        "held-out ELBO", metrics["heldout_elbo"], ">=", cfg.min_elbo, metrics["heldout_elbo"] >= cfg.min_elbo,
    )]
    if cfg.max_iw_nll is not None and "val_iw_nll" in metrics:
        checks.append(("held-out IW NLL", metrics["val_iw_nll"], "<=", cfg.max_iw_nll, metrics["val_iw_nll"] <= cfg.max_iw_nll))
    passed = all(ok for *_, ok in checks)
    failed = [c for c in checks if not c[-1]]
    message = "; ".join(
        f"{name} {value:.4f} nats per example {'is not' if not ok else 'is'} {op} {threshold:g}"
        for name, value, op, threshold, ok in (failed or checks)
    )
    rows = "\n".join(
        f"| {name} | {value:.4f} | {op} {threshold:g} | {'passed' if ok else 'FAILED'} |"
        for name, value, op, threshold, ok in checks
    )
    markdown = (
        f"# Quality gate: {'passed' if passed else 'failed'}\n\n"
        f"| check | value (nats per example) | threshold | result |\n|---|---|---|---|\n{rows}\n\n"
        f"Held-out bits per dimension: {metrics['heldout_bits_per_dim']:.4f}\n"
    )
    return {"passed": passed, "message": f"quality gate {'passed' if passed else 'failed'}: {message}", "markdown": markdown}

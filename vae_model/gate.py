"""The quality gate: held-out figures against the configured thresholds."""

from __future__ import annotations

from typing import Any

from vae_model.config import ValidateConfig


def _shown(value: float | None, unit: str = "") -> str:
    return "not measured" if value is None else f"{value:.4f}{unit}"


def gate_decision(metrics: dict[str, float], cfg: ValidateConfig) -> dict[str, Any]:
    """Compare held-out metrics with the thresholds; the message gives both numbers of each check."""
    checks = [(
        "held-out ELBO", metrics["heldout_elbo"], ">=", cfg.min_elbo, metrics["heldout_elbo"] >= cfg.min_elbo,
    )]
    if cfg.max_iw_nll is not None:
        # The config refuses this threshold without validate.iw_samples; if the figure is still
        # missing, the check fails like any sample gate on an unmeasured figure.
        iw = metrics.get("val_iw_nll")
        checks.append(("held-out IW NLL", iw, "<=", cfg.max_iw_nll, iw is not None and iw <= cfg.max_iw_nll))
    passed = all(ok for *_, ok in checks)
    failed = [c for c in checks if not c[-1]]
    message = "; ".join(
        f"{name} {_shown(value, ' nats per example')} {'is not' if not ok else 'is'} {op} {threshold:g}"
        for name, value, op, threshold, ok in (failed or checks)
    )
    rows = "\n".join(
        f"| {name} | {_shown(value)} | {op} {threshold:g} | {'passed' if ok else 'FAILED'} |"
        for name, value, op, threshold, ok in checks
    )
    markdown = (
        f"# Quality gate: {'passed' if passed else 'failed'}\n\n"
        f"| check | value (nats per example) | threshold | result |\n|---|---|---|---|\n{rows}\n\n"
        f"Held-out bits per dimension: {metrics['heldout_bits_per_dim']:.4f}\n"
    )
    return {"passed": passed, "message": f"quality gate {'passed' if passed else 'failed'}: {message}", "markdown": markdown}

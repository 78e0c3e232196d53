"""Prefect retry and timeout settings for the steps that talk to the tracking server or artifact store."""

from __future__ import annotations

from typing import Any

from vae_model.errors import UserError


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry any failure except a UserError: bad input fails the same way every time."""
    try:
        state.result()
    except UserError:
        return False
    except BaseException:
        return True
    return True


def network(timeout_s: float | None, retries: int = 3) -> dict[str, Any]:
    """Task options: a bounded run time (a hung server call ends as a failure) and backed-off retries.
    MLflow's client already retries single HTTP calls; these cover an outage of a few minutes."""
    return {
        "retries": retries,
        "retry_delay_seconds": [10, 60, 180][:retries] or 0,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": transient,
        "timeout_seconds": timeout_s,
    }

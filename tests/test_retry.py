"""Prefect's own retries on the network-facing steps: transient failures retry, user errors do not,
and a hung step ends at its timeout."""

from __future__ import annotations

import time

from prefect import flow, task

from flows.retry import network
from vae_model.errors import UserError


def _attempts(error: Exception) -> int:
    calls = []

    # Same options as the real steps, without the waits between tries.
    @task(**{**network(timeout_s=30, retries=2), "retry_delay_seconds": 0, "retry_jitter_factor": None})
    def step() -> None:
        calls.append(1)
        raise error

    @flow
    def job() -> bool:
        return step(return_state=True).is_failed()

    assert job()
    return len(calls)


def test_transient_failures_retry_and_user_errors_do_not(prefect_server):
    assert _attempts(ConnectionError("tracking server unreachable")) == 3
    assert _attempts(UserError("data.path: no such file")) == 1


def test_a_hung_step_fails_at_its_timeout(prefect_server):
    @task(**{**network(timeout_s=1, retries=0)})
    def hang() -> None:
        time.sleep(30)

    @flow
    def job() -> tuple[bool, str]:
        state = hang(return_state=True)
        return state.is_failed(), state.message

    start = time.monotonic()
    failed, message = job()
    assert failed and "exceeded timeout of 1.0" in message
    assert time.monotonic() - start < 20

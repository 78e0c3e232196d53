"""One champion decision at a time per registered model, so that two challengers finishing together
read, compare and replace the champion one after the other.

Beside a SQLite store, a file lock next to the database. With a tracking server, whose hosts share
no folder, a one-slot Prefect global concurrency limit: every process that reports to the same
Prefect server (the workers of a deployment, on any host) takes its turn there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from filelock import FileLock

from flows.tracking import sqlite_path

# Waiting longer than this means a holder is stuck: fail, and let Prefect's retry try again.
WAIT_S = 1800


def promotion_lock(registry_uri: str, name: str) -> contextlib.AbstractContextManager:
    path = sqlite_path(registry_uri)
    return FileLock(f"{path}.{name}.lock", timeout=WAIT_S) if path is not None else _prefect_slot(f"vae-promote-{name}")


@contextlib.contextmanager
def _prefect_slot(limit: str) -> Iterator[None]:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    # Prefect 3 acquires only limits that exist; the first decision for a model creates its own.
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    with concurrency(limit, occupy=1, strict=True, timeout_seconds=WAIT_S):
        yield

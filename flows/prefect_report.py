"""What a step adds to Prefect (a markdown artifact, log lines) when it runs as a Prefect task or
a Prefect API is configured. Run in the command's process without one, a step records nothing in
Prefect (which would start a temporary server for it): its MLflow run holds the same figures, and
its log lines go to Python's logging."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def _in_prefect_run() -> bool:
    if "prefect" not in sys.modules:  # never imported: certainly not inside a flow or task run
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _api_configured() -> bool:
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.settings import get_current_settings  # a profile's, or a test harness's

    return bool(get_current_settings().api.url)


def artifact(markdown: str, key: str, description: str) -> None:
    """The step's report as a markdown artifact: of its Prefect run, or on the configured API."""
    if _in_prefect_run() or _api_configured():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown, key=key, description=description)


def log(message: str, *args: Any) -> None:
    """One info line in the Prefect run's log, or Python's logging outside one."""
    if _in_prefect_run():
        from prefect import get_run_logger

        get_run_logger().info(message, *args)
    else:
        logging.getLogger("vae_pipeline").info(message, *args)

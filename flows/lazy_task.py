"""Prefect's `@task`, built when a step is first used as a task. The command's in-process path
calls each step's plain function (`.fn`) and so never imports Prefect (~0.7 s of a 20 s run)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class LazyTask:
    """A step function with Prefect task options: `.fn` is the function; calling it, or any Task
    attribute (`submit`, `retries`, `with_options`, ...), goes to the Prefect task."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._options = options
        self._task: Any = None

    @property
    def task(self) -> Any:
        if self._task is None:
            from prefect import task

            self._task = task(**self._options)(self.fn)
        return self._task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (copy, pickle): never build a task for these
            raise AttributeError(name)
        return getattr(self.task, name)


def task(**options: Any) -> Callable[[Callable[..., Any]], LazyTask]:
    """`@task(name=..., retries=...)`, as Prefect's, built on first use."""
    return lambda fn: LazyTask(fn, options)

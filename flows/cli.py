"""The `vae-pipeline` command."""

from __future__ import annotations

import os

# Both tools phone home by default; a batch job on a closed network should not try.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's temporary server gets 20 s to start by default: too little on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, NoReturn  # noqa: E402

import typer  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from flows import stopping  # noqa: E402
from flows.config import PipelineConfig, load_config  # noqa: E402
from vae_model.atomic import check_writable_dir  # noqa: E402
from vae_model.config import SampleRequest  # noqa: E402
from vae_model.errors import UserError  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
REQUEST_DEFAULTS = SampleRequest()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, gate, register and sample VAEs with Prefect and MLflow.")


def _quiet_user_errors() -> None:
    """Prefect logs every failure with its traceback; a user error needs only its message.
    Done where log records are made, so it holds for every handler Prefect sets up, later too."""
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _finish(state: Any, debug: bool) -> Any:
    """Return a completed flow's result, or print one line for a failed one and exit 1."""
    if not state.is_failed() and not state.is_crashed():
        return state.result()
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, UserError) or not isinstance(outcome, BaseException):
        message = str(outcome) if isinstance(outcome, BaseException) else state.message
    else:
        message = f"{type(outcome).__name__}: {outcome} (rerun with --debug for the traceback)"
        if debug:
            traceback.print_exception(outcome)
    _fail(message)


def _load(config: Path | None, overrides: list[str] | None) -> PipelineConfig:
    """The config file (or configs/default.yaml) with --set applied; exit 2 naming a bad key."""
    try:
        path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        return load_config(path, overrides or [])
    except UserError as exc:
        _fail(str(exc), 2)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config (default: configs/default.yaml)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set train.epochs=3")] = None,
    prefect: Annotated[bool, typer.Option("--prefect", help="Run as the Prefect flow (a flow run in the UI), "
                                          "on a temporary server when PREFECT_API_URL is unset")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks")] = False,
) -> None:
    """Run ingest -> train -> validate -> register -> generate (a Prefect flow where an API is configured).

    Without a Prefect API (PREFECT_API_URL unset) and without --prefect or Dask, the steps run in this
    process: no temporary server, seconds sooner. The MLflow run is its record."""
    cfg = _load(config, overrides)
    if not debug:
        _quiet_user_errors()
    if _as_flow(prefect, bool(cfg.generate.dask_address or cfg.generate.dask_workers)):
        from flows.pipeline import pipeline

        _report(_finish(pipeline(cfg.to_dict(), return_state=True), debug))
    else:
        from flows.steps import run_steps

        _report(_in_process(lambda: run_steps(cfg, as_tasks=False), debug,
                            "its MLflow run is marked KILLED; a rerun starts over, or resumes training from its "
                            "last checkpoint with train.resume=true", defer_stop=True))
        _exit_now()


def _report(result: dict[str, Any]) -> None:
    """The run's outcome in a few lines: the gates, the registry decision, where the samples are."""
    model, samples = result["model"], result["samples"]
    typer.echo(result["gate"])
    if result.get("samples_quality"):
        typer.echo(result["samples_quality"])
        typer.echo(result["evaluation"])
    typer.echo(f"registered {model['name']} version {model['version']} as {model['uri']}: {model['decision']}")
    typer.echo(f"wrote {samples['rows']} samples of the champion, {model['name']} version {samples['model_version']}, "
               f"to {samples['out_dir']} (manifest: {samples['manifest']})")
    typer.echo(f"MLflow run {result['run_id']}")


def _as_flow(prefect: bool, dask: bool) -> bool:
    """Run as the Prefect flow when asked to, for Dask, or where a Prefect API is configured;
    otherwise in this process, without the temporary server Prefect would start."""
    return prefect or dask or bool(os.environ.get("PREFECT_API_URL"))


def _exit_now() -> NoReturn:
    """Exit without the interpreter's teardown: with torch and MLflow loaded it costs ~0.8 s and
    ~130 MB of peak RSS (destructors page libraries back in), and a finished request has every
    file closed and renamed into place already. PNG workers stop when they see their parent gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _in_process(request: Callable[[], Any], debug: bool, after_stop: str, defer_stop: bool = False) -> Any:
    """Run a request without Prefect; a failure is one line, as from a flow. SIGTERM stops it as
    Ctrl-C does (flows.stopping; where `defer_stop`, at the next safe point): one line with what
    the user can do (`after_stop`), an MLflow run it made ends KILLED, exit code 128 + the signal."""
    try:
        with stopping.on_signals(defer_stop):
            return request()
    except KeyboardInterrupt:
        if debug:
            raise
        sig = stopping.stopped_by()
        _fail(f"stopped by {sig.name}: {after_stop}", 128 + sig)
    except UserError as exc:
        _fail(str(exc))
    except Exception as exc:
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION")],
    num_samples: Annotated[int, typer.Option("--num-samples", help="How many samples")],
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: outputs/<model>/v<version>/seed<seed>-n<num>-<request hash>)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = REQUEST_DEFAULTS.seed,
    format: Annotated[str, typer.Option("--format", help="parquet, png or parquet,png")] = ",".join(REQUEST_DEFAULTS.formats),
    labels: Annotated[str | None, typer.Option(help="Conditional models: 3, 0,1,2 or 0:0.7,1:0.3; a class by number or by name (an image folder's class folder)")] = REQUEST_DEFAULTS.labels,
    shard_size: Annotated[int, typer.Option(help="Samples per shard")] = REQUEST_DEFAULTS.shard_size,
    temperature: Annotated[float, typer.Option(help="Scale of the prior's noise: below 1 more typical, above 1 more diverse")] = REQUEST_DEFAULTS.temperature,
    overwrite: Annotated[bool, typer.Option(help="Replace another request's output in --out")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking/registry URI")] = None,
    dask_address: Annotated[str | None, typer.Option(help="Run the shards on this Dask scheduler (tcp://host:8786)")] = None,
    dask_workers: Annotated[int, typer.Option(help="Run the shards on a local Dask cluster of this many processes")] = 0,
    prefect: Annotated[bool, typer.Option("--prefect", help="Run as the Prefect flow (a flow run in the UI), "
                                          "on a temporary server when PREFECT_API_URL is unset")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks")] = False,
) -> None:
    """Generate samples from a registered model (streamed shards, manifest last).

    Without a Prefect API (PREFECT_API_URL unset) and without --prefect or Dask, the request runs in
    this process and never imports Prefect: no temporary server, seconds sooner. The manifest is its record."""
    # Checked before the flow, so a bad request fails without a registry lookup.
    try:
        request = SampleRequest(num_samples=num_samples, seed=seed, labels=labels, temperature=temperature,
                                formats=[f.strip() for f in format.split(",") if f.strip()], shard_size=shard_size)
        if out is not None:
            check_writable_dir(out, "--out")
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--format" if error["loc"][0] == "formats" else f"--{str(error['loc'][0]).replace('_', '-')}"
        _fail(f"{flag}: {error['msg']} (got {error['input']!r})", 2)
    except UserError as exc:
        _fail(str(exc), 2)
    args = (str(model), request, None if out is None else str(out))
    if not _as_flow(prefect, bool(dask_address or dask_workers)):
        from flows.request import generate_here

        done = _in_process(lambda: generate_here(*args, overwrite=overwrite, tracking_uri=tracking_uri), debug,
                           "the same command again finishes the request where it stopped")
        typer.echo(json.dumps(done))
        _exit_now()
    if not debug:
        _quiet_user_errors()
    from flows.generate import generate as generate_flow

    state = generate_flow(*args, overwrite=overwrite, tracking_uri=tracking_uri, dask_address=dask_address,
                          dask_workers=dask_workers, return_state=True)
    typer.echo(json.dumps(_finish(state, debug)))


@app.command()
def evaluate(
    samples: Annotated[Path, typer.Option("--samples", help="A generated folder (part-*.parquet)")],
    model: Annotated[str | None, typer.Option("--model", help="models:/NAME@ALIAS or /VERSION (default: the one the samples name)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Real data snapshot (default: the one the model was trained on)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config for evaluate.*, data.snapshot_dir, tracking.*")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set evaluate.max_samples=5000")] = None,
    prefect: Annotated[bool, typer.Option("--prefect", help="Run as the Prefect flow (a flow run in the UI), "
                                          "on a temporary server when PREFECT_API_URL is unset")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks")] = False,
) -> None:
    """Score a sample set's fidelity, utility and memorisation against the real data (an MLflow run).

    Without a Prefect API (PREFECT_API_URL unset) and without --prefect, it runs in this process and
    never imports Prefect; the MLflow run is its record."""
    cfg = _load(config, overrides)
    if not debug:
        _quiet_user_errors()
    from flows.evaluate_samples import evaluate_flow, evaluate_folder

    args = (cfg, str(samples), model, None if data is None else str(data))
    if not _as_flow(prefect, dask=False):
        typer.echo(json.dumps(_in_process(lambda: evaluate_folder(*args), debug,
                                                "its MLflow run is marked KILLED")))
        _exit_now()
    typer.echo(json.dumps(_finish(evaluate_flow()(*args, return_state=True), debug)))


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

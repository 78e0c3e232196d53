"""The evaluate step inside the pipeline (before registration) and as `vae-pipeline evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient
from PIL import Image
from prefect.artifacts import Artifact

from flows.config import load_config
from tests.conftest import TINY

FAST = [*TINY, "evaluate.enabled=true", "evaluate.classifier_steps=200"]


def _run_pipeline(*extra: str):
    from flows.pipeline import pipeline

    return pipeline(load_config(None, [*FAST, *extra]).to_dict(), return_state=True)


def _only_run(client: MlflowClient):
    return client.search_runs(client.get_experiment_by_name("vae-pipeline").experiment_id)[0]


def test_pipeline_records_the_report_and_the_cli_evaluates_the_generated_folder(cli, workdir):
    state = _run_pipeline()
    assert state.is_completed(), state.message
    assert "sample gate passed" in state.result()["evaluation"]
    client = MlflowClient()
    run = _only_run(client)
    metrics = run.data.metrics
    for key in ("fcd", "precision", "recall", "density", "coverage", "exact_copy_rate", "dcr_train_share", "nndr_median"):
        assert f"eval_{key}" in metrics and f"eval_real_{key}" in metrics, key
    assert metrics["eval_n_synthetic"] == 40 and metrics["eval_seconds"] > 0
    assert run.data.tags["sample_gate_status"] == "passed"
    files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert files == {"evaluation/report.json", "evaluation/closest_to_training.png", "evaluation/preview.png"}
    # The preview is upscaled to be looked at: 8 columns of 8x8 digits, each cell at least 56 pixels.
    preview = Image.open(client.download_artifacts(run.info.run_id, "evaluation/preview.png", str(workdir)))
    assert preview.width >= 8 * 56
    headline = state.result()["samples_quality"]
    assert headline.startswith("samples (real floor in brackets, 40 samples): FCD ") and "recall" in headline
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/report.json", str(workdir))).read_text())
    assert report["synthetic"]["fcd"] == metrics["eval_fcd"]
    markdown = Artifact.get("evaluation")
    assert markdown is not None and "Fréchet classifier distance" in markdown.data

    code, out = cli("evaluate", "--samples", "outputs/samples/vae-digits/v1", "--set", "evaluate.classifier_steps=200")
    assert code == 0, out
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    evaluated = client.get_run(result["run_id"])
    assert evaluated.data.tags["evaluated_model"] == "models:/vae-digits/1"
    assert evaluated.data.tags["data_sha256"] == run.data.tags["data_sha256"]
    assert evaluated.data.metrics["eval_n_synthetic"] == 40
    assert result["synthetic"]["exact_copy_rate"] == evaluated.data.metrics["eval_exact_copy_rate"]


def test_sample_gate_blocks_registration(prefect_server, workdir):
    state = _run_pipeline("validate.max_fcd=0", "validate.max_exact_copy_rate=0.5")
    assert state.is_failed()
    assert "sample gate failed" in state.message and "validate.max_fcd" in state.message
    assert "max_exact_copy_rate" not in state.message  # that check passed
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert not (workdir / "outputs").exists()
    run = _only_run(client)
    assert run.info.status == "FAILED" and run.data.tags["sample_gate_status"] == "failed"
    assert run.data.metrics["eval_fcd"] > 0

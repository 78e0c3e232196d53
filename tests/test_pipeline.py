"""The whole chain on the digits through the real CLI, Prefect and an MLflow SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from mlflow import MlflowClient

from tests.conftest import TINY
from vae_model.atomic import sha256_file


def _samples(out_dir: Path):
    return pq.read_table(sorted(str(p) for p in out_dir.glob("part-*.parquet")))


def _run(cli, *extra: str):
    return cli("run", *[a for s in [*TINY, *extra] for a in ("--set", s)])


def test_default_chain_trains_gates_registers_and_generates(cli, workdir):
    code, out = _run(cli)
    assert code == 0, out
    assert "quality gate passed" in out

    client = MlflowClient()
    version = client.get_model_version_by_alias("vae-digits", "champion")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["validation_status"] == "passed"
    assert run.data.params["train.epochs"] == "3" and run.data.params["data.kind"] == "digits"
    for name in ("train_elbo", "val_elbo", "val_recon", "val_kl", "epoch_seconds"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_elbo")}
    assert val[3] > val[1], "held-out ELBO should improve while training"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert {"images/samples.png", "images/reconstructions.png"} <= artifacts
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert float(version.tags["heldout_elbo"]) == run.data.metrics["heldout_elbo"]
    assert len(version.tags["data_sha256"]) == 64 and len(version.tags["config_sha256"]) == 64

    out_dir = workdir / "outputs" / "samples" / "vae-digits" / f"v{version.version}"
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["model_version"] == str(version.version) and manifest["seed"] == 0
    assert manifest["model_uri"] == f"models:/vae-digits/{version.version}"
    assert f"samples of the champion, vae-digits version {version.version}, to {out_dir.resolve()}" in out
    for entry in manifest["files"]:
        assert sha256_file(out_dir / entry["path"]) == entry["sha256"], entry["path"]
    table = pq.read_table(out_dir / "part-00000.parquet")
    assert table.num_rows == 40
    assert table.column_names == [
        "sample_id", "label", "label_name", "pixels", "height", "width", "channels", "model_name", "model_version", "seed",
    ]
    # Digits' classes have no names: the column is there, and null.
    assert table.column("label_name").null_count == 40
    assert table.column("height")[0].as_py() == 8 and len(table.column("pixels")[0].as_py()) == 64
    assert len(list((out_dir / "images").rglob("*.png"))) == 40
    assert (out_dir / "preview.png").exists()


def test_impossible_gate_fails_registers_nothing_and_writes_no_samples(cli, workdir):
    code, out = _run(cli, "validate.min_elbo=1e9")
    assert code == 1
    line = [l for l in out.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "quality gate failed" in line[0] and "1e+09" in line[0], out
    assert "Traceback" not in out
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert not (workdir / "outputs").exists()
    run = client.search_runs(client.get_experiment_by_name("vae-pipeline").experiment_id)[0]
    assert run.data.tags["validation_status"] == "failed" and run.info.status == "FAILED"


def test_generate_twice_with_one_seed_gives_identical_files(cli, workdir):
    assert _run(cli)[0] == 0
    outputs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        code, out = cli("generate", "--model", "models:/vae-digits@champion", "--num-samples", "30",
                        "--out", name, "--seed", str(seed), "--shard-size", "16")
        assert code == 0, out
        outputs.append({p.relative_to(workdir / name): p.read_bytes()
                        for p in (workdir / name).rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    assert outputs[0][Path("part-00000.parquet")] != outputs[2][Path("part-00000.parquet")]
    ids = _samples(workdir / "a").column("sample_id").to_pylist()
    assert sorted(ids) == list(range(30))


def test_registered_model_loads_with_plain_mlflow_in_a_fresh_process(cli, workdir):
    assert _run(cli)[0] == 0
    script = (
        "import mlflow, numpy as np, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/vae-digits@champion')\n"
        "x = np.stack(m.predict(pd.DataFrame([{'num_samples': 5, 'seed': 0}]))['pixels'])\n"
        "print(x.shape, x.dtype)\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(5, 64) uint8"


def test_unknown_and_ill_typed_keys_are_named(cli, workdir):
    code, out = cli("run", "--set", "train.epochz=3")
    assert code == 2 and "train.epochz" in out
    code, out = cli("run", "--set", "train.epochs=three")
    assert code == 2 and "train.epochs" in out and "three" in out
    bad = workdir / "bad.yaml"
    bad.write_text("model:\n  latent_dims: 3\n")
    code, out = cli("run", "--config", str(bad))
    assert code == 2 and "model.latent_dims" in out and "bad.yaml" in out
    assert not (workdir / "mlflow.db").exists() or MlflowClient().search_registered_models() == []


def test_samples_decode_back_to_digit_like_images(cli, workdir):
    assert _run(cli)[0] == 0
    table = _samples(workdir / "outputs" / "samples" / "vae-digits" / "v1")
    pixels = np.frombuffer(b"".join(table.column("pixels").to_pylist()), np.uint8).reshape(-1, 8, 8)
    # The digits are dark backgrounds with bright strokes: samples should share that contrast.
    assert pixels.mean() < 128 and pixels.max() > 128

"""On-demand generation: byte-identical repeats, resume after a real kill, refusals, conditional
labels, read-back by pyarrow, pandas and torchvision, and the Dask path.

Two tiny models (unconditional and conditional, trained for two epochs on the digits) are
registered once per module in a temporary MLflow SQLite store; the flow runs for real on the
session's Prefect test server.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from prefect.exceptions import ParameterTypeError

import vae_model.generate as gen
import vae_model.sampling as sampling
from flows.generate import generate
from tests.conftest import register_tiny_models
from vae_model.config import SampleRequest
from vae_model.errors import UserError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Register an unconditional and a conditional tiny model; yield the store URI and model URIs."""
    uri = register_tiny_models(tmp_path_factory.mktemp("registry"), {"plain": False, "cond": True})
    return {"store": uri, "plain": "models:/plain@champion", "cond": "models:/cond@champion"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _labels(column: pd.Series) -> list[int | None]:
    return [None if pd.isna(v) else int(v) for v in column]


def _parts(folder: Path) -> list[str]:
    return sorted(glob.glob(str(folder / "part-*.parquet")))


def test_repeats_are_byte_identical_and_read_back_everywhere(prefect_server, models, tmp_path, monkeypatch):
    # Small blocks, so that each shard has several row groups and PNG blocks in flight.
    monkeypatch.setattr(sampling, "DECODE_BLOCK", 64)
    asked = SampleRequest(num_samples=300, shard_size=128, formats=["parquet", "png"], seed=7)
    a = generate(models["plain"], asked, str(tmp_path / "a"), tracking_uri=models["store"])
    generate(models["plain"], asked, str(tmp_path / "b"), tracking_uri=models["store"])
    generate(models["plain"], asked.model_copy(update={"seed": 8}), str(tmp_path / "c"), tracking_uri=models["store"])
    first, again, other = (_tree(tmp_path / x) for x in "abc")
    assert first == again
    assert first["part-00000.parquet"] != other["part-00000.parquet"]
    assert a["rows"] == 300

    out = tmp_path / "a"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["shards"] == 3 and manifest["model_uri"] == models["plain"]
    listed = {f["path"] for f in manifest["files"]}
    assert listed == {p for p in first if not p.startswith(".shards/") and p != "manifest.json"}

    parquet = pq.ParquetFile(out / "part-00001.parquet")
    assert parquet.num_row_groups == 2  # 128 rows in blocks of 64
    meta = parquet.schema_arrow.metadata
    assert meta[b"model_uri"] == models["plain"].encode() and meta[b"seed"] == b"7"
    assert meta[b"first_sample_id"] == b"128"
    table = ds.dataset(_parts(out), format="parquet").to_table()
    assert sorted(table.column("sample_id").to_pylist()) == list(range(300))
    assert table.column("label").null_count == 300
    frame = pd.read_parquet(_parts(out))
    assert len(frame) == 300 and set(frame["seed"]) == {7} and set(frame["model_name"]) == {"plain"}

    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(out / "images"))
    assert folder.classes == ["unlabelled"] and len(folder) == 300
    pixels = np.frombuffer(frame.set_index("sample_id").loc[5, "pixels"], np.uint8).reshape(8, 8)
    path, _ = folder.samples[5]
    assert Path(path).name == "000000005.png"
    assert np.array_equal(np.asarray(folder.loader(path).convert("L")), pixels)


def test_generation_loads_the_versions_weights_not_unpickled_code(models):
    from flows import registered_model, tracking
    from vae_model.model import Sampler

    tracking.use(models["store"])
    model = registered_model.resolve(models["cond"])
    assert isinstance(registered_model.load_sampler(model["name"], model["version"]), Sampler)
    # The spec read from the weights file is the one the MLmodel metadata documents.
    meta = mlflow.models.get_model_info(f"models:/{model['name']}/{model['version']}").metadata
    assert model["spec"] == {key: meta[key] for key in model["spec"]} and model["spec"]["num_classes"] > 0
    prior = registered_model.load_sampler(model["name"], model["version"]).prior
    assert prior.fitted and float(prior.means.abs().sum()) > 0  # a fitted mixture, not N(0, I)


def test_the_registered_model_is_logged_from_code_not_a_pickle(models):
    local = Path(mlflow.artifacts.download_artifacts(models["plain"]))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"served_sampler.py", "artifacts/weights.pt"} <= files
    assert not {f for f in files if f.endswith((".pkl", ".pth", ".pt2"))}
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"  # set by flows.tracking
    assert len(mlflow.pyfunc.load_model(models["plain"]).predict(pd.DataFrame([{"num_samples": 3}]))) == 3


def test_the_registered_model_returns_the_samples_generate_writes(prefect_server, models, tmp_path):
    """A request to plain MLflow's pyfunc gives, byte for byte, the pixels and labels `generate`
    writes for the same request: several shards, labels, temperature."""
    cases = {"plain": dict(temperature=0.7), "cond": dict(labels="0:0.75,9:0.25")}
    for kind, options in cases.items():
        out = tmp_path / kind
        asked = SampleRequest(num_samples=300, seed=5, shard_size=128, formats=["parquet"], **options)
        generate(models[kind], asked, str(out), tracking_uri=models["store"])
        written = pd.read_parquet(_parts(out)).sort_values("sample_id", ignore_index=True)
        served = mlflow.pyfunc.load_model(models[kind]).predict(
            pd.DataFrame([{"num_samples": 300, "seed": 5, "shard_size": 128, **options}]))
        assert served["sample_id"].tolist() == written["sample_id"].tolist() == list(range(300))
        assert [bytes(p) for p in served["pixels"]] == written["pixels"].tolist()
        assert _labels(served["label"]) == _labels(written["label"])
        assert (kind == "cond") == (set(_labels(served["label"])) == {0, 9})


def test_a_version_logged_as_an_exported_program_with_its_weights_file_still_generates(prefect_server, models, tmp_path):
    """Versions logged before the served model: a torch.export program with `extra_files/sampler.pt`.
    Generation reads that file, so the same weights give the same bytes as today's layout."""
    from flows import tracking
    from vae_model.model import Sampler
    from vae_model.weights import load_model

    tracking.use(models["store"])
    model = load_model(mlflow.artifacts.download_artifacts(f"{models['plain']}/artifacts/weights.pt"))
    sampler = Sampler.of(model)
    weights = str(tmp_path / "sampler.pt")  # that era's layout: the decoder's and prior's tensors
    torch.save({"model_config": model.cfg.to_dict(), "decoder": model.decoder.state_dict(),
                "prior": model.prior.state_dict()}, weights)
    width = sampler.latent_dim + 1
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(sampler, name="model", serialization_format="pt2", pip_requirements=["torch"],
                                        input_example=np.zeros((2, width), np.float32), extra_files=[weights])
    version = mlflow.register_model(f"models:/{info.model_id}", "exported-with-weights").version
    asked = SampleRequest(num_samples=50, seed=3, formats=["parquet"])
    generate(f"models:/exported-with-weights/{version}", asked, str(tmp_path / "old"), tracking_uri=models["store"])
    generate(models["plain"], asked, str(tmp_path / "new"), tracking_uri=models["store"])
    old, new = (pd.read_parquet(_parts(tmp_path / x)) for x in ("old", "new"))
    assert old["pixels"].tolist() == new["pixels"].tolist()


def test_a_version_without_the_weights_file_loads_its_exported_program(models):
    """Versions logged before `extra_files/sampler.pt` existed still generate."""
    from flows import registered_model, tracking
    from vae_model.model import VAE, Sampler, VAEConfig

    class OldSampler(torch.nn.Module):  # what versions logged then hold: z in, pixel means out
        def __init__(self, decoder: torch.nn.Module):
            super().__init__()
            self.decoder = decoder

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.decoder(z))

    tracking.use(models["store"])
    torch.manual_seed(0)
    sampler = OldSampler(VAE(VAEConfig(latent_dim=4, hidden_dim=8)).decoder).eval()
    spec = {"latent_dim": 4, "channels": 1, "height": 28, "width": 28, "num_classes": 0}
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(sampler, name="model", input_example=np.zeros((2, 4), np.float32),
                                        pip_requirements=["torch"], metadata=spec)
    version = mlflow.register_model(f"models:/{info.model_id}", "exported-only").version
    assert registered_model.resolve(f"models:/exported-only/{version}")["spec"] == {**spec, "class_names": []}
    loaded = registered_model.load_sampler("exported-only", str(version))
    assert not isinstance(loaded, Sampler)  # the exported program, behind the new input layout
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    uniform = torch.rand(8, 1)  # the prior's column, which such a version has no use for
    with torch.inference_mode():
        assert torch.allclose(loaded(torch.cat([z, uniform], 1)), sampler(z), atol=1e-6)


def test_shard_bytes_do_not_depend_on_threads_or_neighbours(models, tmp_path, monkeypatch):
    """A shard made alone on a one-thread torch equals the same shard made beside others on a
    three-thread torch; the caller's thread count is left as it was."""
    from flows import registered_model, tracking

    monkeypatch.setattr(sampling, "DECODE_BLOCK", 32)
    tracking.use(models["store"])
    model = registered_model.resolve(models["plain"])
    decode = registered_model.load_sampler(model["name"], model["version"])
    spec = sampling.SamplerSpec(**model["spec"])
    request = sampling.Request.of(SampleRequest(num_samples=400, seed=3, formats=["parquet"], shard_size=100), 0,
                                  models["plain"], model["name"], model["version"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = tmp_path / "alone"
        (alone / ".shards").mkdir(parents=True)
        gen.make_shard(decode, spec, request, 2, alone)
        torch.set_num_threads(3)
        together = tmp_path / "together"
        (together / ".shards").mkdir(parents=True)
        gen.make_shards(decode, spec, request, together, workers=3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert (alone / "part-00002.parquet").read_bytes() == (together / "part-00002.parquet").read_bytes()
    assert len(list(together.glob("part-*.parquet"))) == 4


def test_conflicting_request_is_refused_unless_overwrite(prefect_server, models, tmp_path):
    out = tmp_path / "out"
    asked, store = SampleRequest(num_samples=20, formats=["parquet"], seed=1), models["store"]
    generate(models["plain"], asked, str(out), tracking_uri=store)
    before = _tree(out)
    with pytest.raises(UserError, match="another request.*overwrite=true"):
        generate(models["plain"], asked.model_copy(update={"seed": 2}), str(out), tracking_uri=store)
    assert _tree(out) == before
    generate(models["plain"], asked.model_copy(update={"seed": 2}), str(out), overwrite=True, tracking_uri=store)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    # A deployment run's request arrives as JSON: Prefect checks it against SampleRequest.
    for bad in (0, -5):
        with pytest.raises(ParameterTypeError, match="num_samples"):
            generate(models["plain"], {"num_samples": bad}, str(tmp_path / "n"), tracking_uri=store)
    with pytest.raises(UserError, match="not conditional"):
        generate(models["plain"], SampleRequest(num_samples=5, labels="3"), str(tmp_path / "l"), tracking_uri=store)
    assert not (tmp_path / "n").exists() and not (tmp_path / "l").exists()


def test_conditional_labels_single_list_and_proportions(prefect_server, models, tmp_path):
    from torchvision.datasets import ImageFolder

    def run(name: str, labels: str | None, n: int = 60) -> pd.DataFrame:
        generate(models["cond"], SampleRequest(num_samples=n, labels=labels, shard_size=32), str(tmp_path / name),
                 tracking_uri=models["store"])
        return pd.read_parquet(_parts(tmp_path / name))

    single = run("single", "3")
    assert set(single["label"]) == {3}
    assert ImageFolder(str(tmp_path / "single" / "images")).classes == ["3"]

    cycled = run("list", "0,1,2")
    assert cycled.sort_values("sample_id")["label"].tolist() == [0, 1, 2] * 20

    mixed = run("mixed", "0:0.75,9:0.25", n=400)
    assert set(mixed["label"]) == {0, 9}
    assert abs((mixed["label"] == 0).mean() - 0.75) < 0.1
    folder = ImageFolder(str(tmp_path / "mixed" / "images"))
    assert folder.classes == ["0", "9"] and len(folder) == 400
    by_id = dict(zip(mixed["sample_id"], mixed["label"], strict=True))
    for path, target in folder.samples[::40]:
        assert int(folder.classes[target]) == by_id[int(Path(path).stem)]

    every = run("default", None, n=20)
    assert every.sort_values("sample_id")["label"].tolist() == list(range(10)) * 2
    with pytest.raises(UserError, match="label 12 is outside 0..9"):
        run("bad", "12")


def test_killed_generation_resumes_to_identical_files(prefect_server, models, tmp_path):
    args = ["--model", models["cond"], "--num-samples", "3000", "--shard-size", "50", "--seed", "5",
            "--format", "parquet,png", "--labels", "1,7", "--tracking-uri", models["store"]]
    out = tmp_path / "killed"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", *args, "--out", str(out)],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Shards finish side by side, in any order: wait for any four.
        while len(list((out / ".shards").glob("part-*.json"))) < 4:
            assert process.poll() is None and time.monotonic() < deadline, "generation ended before it was killed"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    records = list((out / ".shards").glob("part-*.json"))
    assert not (out / "manifest.json").exists() and 4 <= len(records) < 60

    # The same request again, as the CLI sent it: it keeps the finished shards and completes.
    request = SampleRequest(num_samples=3000, shard_size=50, seed=5, formats=["parquet", "png"], labels="1,7")
    kept = {p.name: p.stat().st_mtime_ns for p in records}
    generate(models["cond"], request, str(out), tracking_uri=models["store"])
    assert all((out / ".shards" / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
    generate(models["cond"], request, str(tmp_path / "whole"), tracking_uri=models["store"])
    resumed, whole = _tree(out), _tree(tmp_path / "whole")
    assert resumed.keys() == whole.keys()
    assert resumed == whole


def test_dask_cluster_gives_the_single_process_bytes(prefect_server, models, tmp_path):
    from distributed import Client, LocalCluster

    asked = SampleRequest(num_samples=200, shard_size=50, seed=11, labels="0:0.5,5:0.5")
    generate(models["cond"], asked, str(tmp_path / "local"), tracking_uri=models["store"])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        generate(models["cond"], asked, str(tmp_path / "dask"), tracking_uri=models["store"],
                 dask_address=cluster.scheduler_address)
        with Client(cluster) as client:
            ran_there = client.run(lambda: "vae_model.generate" in sys.modules)
    assert any(ran_there.values())
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "local")


def test_png_workers_stop_when_their_process_is_killed(tmp_path):
    """A killed generation must not leave PNG writers running into a directory a rerun fills."""
    script = (
        "import sys, time, vae_model.generate as gen\n"
        "with gen.png_writers(2):\n"
        "    print(' '.join(str(p) for p in gen._pool._processes), flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    finally:
        process.kill()
        process.wait(30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def test_png_workers_end_with_their_block():
    import vae_model.generate as gen

    with gen.png_writers(2):
        workers = list(gen._pool._processes)
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    assert gen._pool is None and not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False

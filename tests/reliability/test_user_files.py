"""The tool deletes only what it wrote: a user's files beside, above or inside an output survive
`run` and `generate --overwrite`, and a folder that is not the tool's output is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.generate import generate
from tests.conftest import TINY, register_tiny_models
from vae_model.config import SampleRequest
from vae_model.errors import UserError
from vae_model.generate import prepare_output
from vae_model.sampling import Request


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _plant(root: Path, *paths: str) -> dict[str, bytes]:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"the user's {path}")
    return {path: (root / path).read_bytes() for path in paths}


def _survived(root: Path, planted: dict[str, bytes]) -> bool:
    return all((root / path).read_bytes() == data for path, data in planted.items())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tiny registered model; yields the store URI."""
    return register_tiny_models(tmp_path_factory.mktemp("registry"), {"plain": False}, epochs=1, hidden_dim=16)


def test_run_into_the_working_directory_keeps_every_foreign_file(cli, workdir):
    """The reported case: `--set generate.out_dir=.` in a folder holding the user's files."""
    planted = _plant(workdir, "precious.txt", "notes/a.txt", "vae-digits/readme.txt")
    args = [a for s in [*TINY, "generate.out_dir=."] for a in ("--set", s)]
    code, out = cli("run", *args)
    assert code == 0, out
    assert _survived(workdir, planted) and (workdir / "mlflow.db").is_file()
    samples = workdir / "vae-digits" / "v1"
    assert json.loads((samples / "manifest.json").read_text())["model_version"] == "1"
    written = _tree(samples)

    # A retrain, with the user's file now inside the samples: nothing of theirs or of v1's goes.
    planted |= _plant(workdir, "vae-digits/v1/mine.txt")
    code, out = cli("run", *args)
    assert code == 0, out
    assert _survived(workdir, planted) and (workdir / "mlflow.db").is_file()
    assert _tree(samples) == {**written, "mine.txt": planted["vae-digits/v1/mine.txt"]}
    champion = MlflowClient().get_model_version_by_alias("vae-digits", "champion").version
    assert (workdir / "vae-digits" / f"v{champion}" / "manifest.json").is_file()

    # `generate --overwrite` into a folder that is not the tool's output: one line, nothing changed.
    for folder in (".", "notes"):
        code, out = cli("generate", "--model", "models:/vae-digits@champion", "--num-samples", "5",
                        "--out", folder, "--overwrite")
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1 and "Traceback" not in out, out
        assert f"{folder}: not empty and not an output of vae-pipeline generate" in errors[0]
    assert _survived(workdir, planted)


def test_a_foreign_folder_is_refused_with_or_without_overwrite(prefect_server, store, tmp_path, monkeypatch):
    planted = _plant(tmp_path, "a.txt", "sub/b.txt", "manifest.json", ".shards/request.json")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    for out_dir in (str(tmp_path), "."):
        for overwrite in (False, True):
            with pytest.raises(UserError) as error:
                generate("models:/plain/1", SampleRequest(num_samples=5), out_dir, overwrite=overwrite, tracking_uri=store)
            message = str(error.value)
            assert message.startswith(f"{out_dir}: not empty and not an output") and "\n" not in message
    assert _tree(tmp_path) == before and _survived(tmp_path, planted)


def test_overwrite_replaces_the_tools_files_and_keeps_the_users(prefect_server, store, tmp_path):
    out = tmp_path / "parent" / "out"
    generate("models:/plain/1", SampleRequest(num_samples=150, seed=1, shard_size=64), str(out), tracking_uri=store)
    assert (out / "part-00002.parquet").exists()
    planted = _plant(tmp_path, "parent/precious.txt", "parent/out/mine.txt", "parent/out/.draft.tmp",
                     "parent/out/images/unlabelled/notes.txt", "parent/out/images/holiday/000000001.png",
                     "parent/out/.shards/mine.json")
    # What a killed run may leave unrecorded: a shard file and the temporary files of the writers.
    leftovers = ["part-00009.parquet", ".part-00003.parquet.0123456789ab.tmp",
                 "images/unlabelled/.000000007.png.tmp", ".shards/.part-00004.json.0123456789ab.tmp"]
    for name in leftovers:
        (out / name).write_bytes(b"partial")

    again = SampleRequest(num_samples=40, seed=2, shard_size=64)
    generate("models:/plain/1", again, str(out), overwrite=True, tracking_uri=store)
    generate("models:/plain/1", again, str(tmp_path / "fresh"), tracking_uri=store)
    assert _survived(tmp_path, planted)
    mine = {path.removeprefix("parent/out/") for path in planted if path.startswith("parent/out/")}
    replaced = {path: data for path, data in _tree(out).items() if path not in mine}
    assert replaced == _tree(tmp_path / "fresh")
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2


def test_a_copied_output_without_its_records_is_recognised_by_its_manifest(tmp_path):
    request = Request.of(SampleRequest(num_samples=4), 0, "models:/plain/1", "plain", "1")
    manifest = {**request.to_dict(), "rows": 4, "shards": 1, "files": []}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "part-00000.parquet").write_bytes(b"old")
    other = Request.of(SampleRequest(num_samples=8, seed=1), 0, "models:/plain/1", "plain", "1")
    with pytest.raises(UserError, match="another request's output"):
        prepare_output(tmp_path, other, overwrite=False)
    prepare_output(tmp_path, other, overwrite=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".shards", "request.json"]

"""Bad input: one clear line naming the culprit, a non-zero exit, nothing registered, no output.

Every source case is checked at the library level (fast, one message each); a representative set
goes through the real command, which is where the exit code, the missing traceback and the empty
registry and output folder are asserted.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlflow import MlflowClient

from flows.config import load_config
from tests.conftest import TINY
from tests.reliability import corpus
from vae_model.config import DataConfig, ValidateConfig
from vae_model.data import load_source
from vae_model.errors import UserError
from vae_model.gate import SAMPLE_GATES, quality_gate


def _case_truncated_gz(tmp: Path):
    return {"kind": "mnist", "path": str(corpus.mnist_folder(tmp / "m", truncate="train-images-idx3-ubyte.gz"))}, [
        "train-images-idx3-ubyte.gz", "truncated or corrupt gzip data"]


def _case_corrupt_gz(tmp: Path):
    return {"kind": "mnist", "path": str(corpus.mnist_folder(tmp / "m", corrupt="t10k-labels-idx1-ubyte.gz"))}, [
        "t10k-labels-idx1-ubyte.gz", "neither gzip data nor an IDX labels file"]


def _case_missing_gz(tmp: Path):
    folder = corpus.mnist_folder(tmp / "m")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    return {"kind": "mnist", "path": str(folder)}, ["missing train-labels-idx1-ubyte.gz"]


def _idx(tmp: Path, **kwargs) -> dict:
    return {"kind": "mnist", "path": str(corpus.idx_folder(tmp / "m", **kwargs))}


def _case_idx_truncated(tmp: Path):
    whole = corpus.idx_bytes(np.zeros((5, 28, 28)))
    return _idx(tmp, compress=None, replace={"train-images-idx3-ubyte": whole[:-100]}), [
        "train-images-idx3-ubyte:", "truncated or corrupt IDX data"]


def _case_idx_truncated_gz(tmp: Path):
    settings = _idx(tmp)
    path = Path(settings["path"], "t10k-images-idx3-ubyte.gz")
    path.write_bytes(path.read_bytes()[:-20])
    return settings, ["t10k-images-idx3-ubyte.gz", "truncated or corrupt gzip data"]


def _case_idx_wrong_magic(tmp: Path):
    labels_in_place_of_images = corpus.idx_bytes(np.zeros(3))
    return _idx(tmp, replace={"t10k-images-idx3-ubyte": labels_in_place_of_images}), [
        "t10k-images-idx3-ubyte.gz", "not an IDX images file", "magic number 00000801"]


def _case_idx_count_mismatch(tmp: Path):
    return _idx(tmp, replace={"train-labels-idx1-ubyte": np.zeros(4)}), [
        "train-labels-idx1-ubyte.gz", "4 labels for the 5 images"]


def _case_idx_label_out_of_range(tmp: Path):
    return _idx(tmp, compress=None, replace={"t10k-labels-idx1-ubyte": np.array([3, 1, 12])}), [
        "t10k-labels-idx1-ubyte", "item 2", "label 12", "outside 0..9"]


def _case_idx_wrong_image_size(tmp: Path):
    return _idx(tmp, replace={"train-images-idx3-ubyte": np.zeros((5, 32, 32))}), [
        "train-images-idx3-ubyte.gz", "images are 32x32, expected 28x28"]


def _case_idx_missing(tmp: Path):
    settings = _idx(tmp, compress=None)
    Path(settings["path"], "train-labels-idx1-ubyte").unlink()
    return settings, ["missing train-labels-idx1-ubyte.gz", "gz or uncompressed"]


def _case_corrupt_image(tmp: Path):
    root = corpus.image_folder(tmp / "f")
    (root / "b" / "1.png").write_bytes(corpus.png_bytes(np.zeros((8, 8)))[:30])
    return {"kind": "imagefolder", "path": str(root)}, ["b/1.png", "not a readable image"]


def _case_non_image_file(tmp: Path):
    root = corpus.image_folder(tmp / "f")
    (root / "a" / "notes.txt").write_text("hello")
    return {"kind": "imagefolder", "path": str(root)}, ["notes.txt", "not an image file"]


def _case_mixed_sizes(tmp: Path):
    root = corpus.image_folder(tmp / "f")
    (root / "b" / "9.png").write_bytes(corpus.png_bytes(np.zeros((10, 10))))
    return {"kind": "imagefolder", "path": str(root)}, ["b/9.png", "10x10", "expected L 8x8", "data.convert"]


def _case_mixed_modes(tmp: Path):
    root = corpus.image_folder(tmp / "f")
    (root / "a" / "9.png").write_bytes(corpus.png_bytes(np.zeros((8, 8, 3)), "RGB"))
    return {"kind": "imagefolder", "path": str(root)}, ["a/9.png", "RGB", "expected L"]


def _case_empty_folder(tmp: Path):
    (tmp / "f" / "a").mkdir(parents=True)
    return {"kind": "imagefolder", "path": str(tmp / "f")}, ["no images found"]


def _case_nan(tmp: Path):
    values = pa.array([0.1, 0.2, float("nan"), 0.3, 0.4, 0.5])
    return {"kind": "parquet", "path": str(corpus.parquet_pixels(tmp / "x.parquet", p3=values))}, [
        "row 2", "column 'p3'", "not a finite number"]


def _case_inf(tmp: Path):
    values = pa.array([0.1, float("inf"), 0.2, 0.3, 0.4, 0.5])
    return {"kind": "parquet", "path": str(corpus.parquet_pixels(tmp / "x.parquet", p0=values))}, [
        "row 1", "column 'p0'", "not a finite number"]


def _case_wrong_column_type(tmp: Path):
    values = pa.array(["a"] * 6)
    return {"kind": "parquet", "path": str(corpus.parquet_pixels(tmp / "x.parquet", p5=values))}, [
        "column 'p5'", "string", "expected numeric pixels"]


def _case_wrong_image_column_type(tmp: Path):
    path = tmp / "x.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": pa.array([1, 2, 3])}), path)
    return {"kind": "parquet", "path": str(path)}, ["column 'image'", "expected binary PNG/JPEG bytes"]


def _case_missing_columns(tmp: Path):
    path = tmp / "x.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"label": pa.array([0, 1])}), path)
    return {"kind": "parquet", "path": str(path)}, ["no 'image' column and no pixel columns"]


def _case_empty_table(tmp: Path):
    path = tmp / "x.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": pa.array([], pa.binary())}), path)
    return {"kind": "parquet", "path": str(path)}, ["the table is empty"]


def _case_missing_image_value(tmp: Path):
    png = corpus.png_bytes(np.zeros((8, 8)))
    return {"kind": "parquet", "path": str(corpus.parquet_images(tmp / "x.parquet", [png, None, png]))}, [
        "row 1", "missing image"]


def _case_label_out_of_range(tmp: Path):
    path = corpus.parquet_pixels(tmp / "x.parquet", label=pa.array([0, 1, 2, 7, 1, 0]))
    return {"kind": "parquet", "path": str(path), "num_classes": 3}, ["row 3", "label 7", "outside 0..2"]


def _case_negative_label(tmp: Path):
    path = corpus.parquet_pixels(tmp / "x.parquet", label=pa.array([0, 1, -4, 1, 1, 0]))
    return {"kind": "parquet", "path": str(path)}, ["row 2", "label -4", "negative"]


def _case_missing_label(tmp: Path):
    path = corpus.parquet_pixels(tmp / "x.parquet", label=pa.array([0, 1, None, 1, 1, 0], pa.int64()))
    return {"kind": "parquet", "path": str(path)}, ["row 2", "column 'label'", "missing label"]


def _case_float_labels(tmp: Path):
    path = corpus.parquet_pixels(tmp / "x.parquet", label=pa.array([0.5] * 6))
    return {"kind": "parquet", "path": str(path)}, ["column 'label'", "expected integer class labels"]


def _case_pixels_out_of_range(tmp: Path):
    path = corpus.parquet_pixels(tmp / "x.parquet", p1=pa.array([0, 3, 300, 1, 2, 4]))
    return {"kind": "parquet", "path": str(path)}, ["row 2", "column 'p1'", "outside 0..255"]


def _case_one_example(tmp: Path):
    png = corpus.png_bytes(np.zeros((8, 8)))
    return {"kind": "parquet", "path": str(corpus.parquet_images(tmp / "x.parquet", [png]))}, [
        "1 example(s)", "at least 2"]


def _case_not_parquet(tmp: Path):
    (tmp / "x.parquet").write_text("a,b\n1,2\n")
    return {"kind": "parquet", "path": str(tmp / "x.parquet")}, ["x.parquet", "not a readable Parquet file"]


SOURCE_CASES = {name[6:]: fn for name, fn in globals().items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_each_bad_source_gives_one_line_naming_the_culprit(case, tmp_path):
    settings, expected = SOURCE_CASES[case](tmp_path)
    with pytest.raises(UserError) as info:
        load_source(DataConfig(**settings))
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_mixed_folder_is_converted_when_the_config_asks(tmp_path):
    root = corpus.image_folder(tmp_path / "f")
    (root / "b" / "9.png").write_bytes(corpus.png_bytes(np.zeros((10, 10, 3)), "RGB"))
    train, val = load_source(DataConfig(kind="imagefolder", path=str(root), convert=True, mode="L"))
    assert train.shape == (1, 8, 8) and len(train) + len(val) == 7


@pytest.mark.parametrize("overrides, expected", [
    (["train.epochz=1"], "unknown config key 'train.epochz'"),
    (["nosection.x=1"], "unknown config key 'nosection'"),
    (["train.epochs=-1"], "train.epochs"),
    (["train.lr=fast"], "train.lr"),
    (["generate.num_samples=0"], "generate.num_samples"),
    (["data.kind=csv"], "data.kind"),
    (["tracking.uri=postgresql://me:secret@db/mlflow"], "embeds a password"),
    (["train.epochs"], "expected KEY=VALUE"),
    (["validate.max_iw_nll=90"],
     "config key 'validate.max_iw_nll': cannot be measured under this config; needs validate.iw_samples > 0"),
    (["evaluate.enabled=false", "validate.max_fcd_ratio=2", "validate.min_coverage=0.1"],
     ("config keys 'validate.max_fcd_ratio', 'validate.min_coverage': cannot be measured under this config; "
      "needs evaluate.enabled=true")),
    (["train.compile=true", "train.iw_samples=4"],
     "config keys 'train.compile' and 'train.iw_samples' conflict: train.compile graphs the one-sample ELBO step"),
    (["validate.min_label_agreement=0.5"],
     "'validate.min_label_agreement': cannot be measured under this config; needs model.conditional=true"),
])
def test_config_errors_name_the_key(overrides, expected):
    with pytest.raises(UserError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("gate", SAMPLE_GATES)
def test_each_sample_gate_needs_the_evaluate_step(gate):
    measured = [f"validate.{gate}=0.5", "model.conditional=true"]
    assert getattr(load_config(None, measured).validate_, gate) == 0.5
    with pytest.raises(UserError) as info:
        load_config(None, [*measured, "evaluate.enabled=false"])
    assert f"'validate.{gate}'" in str(info.value) and "evaluate.enabled=true" in str(info.value)


def test_the_iw_gate_is_measured_or_fails_never_skipped():
    assert load_config(None, ["validate.max_iw_nll=90", "validate.iw_samples=5"]).validate_.max_iw_nll == 90
    cfg = ValidateConfig(max_iw_nll=90, iw_samples=5)
    base = {"heldout_elbo": -80.0, "heldout_bits_per_dim": 0.2}
    assert quality_gate({**base, "val_iw_nll": 85.0}, cfg)["passed"]
    assert not quality_gate({**base, "val_iw_nll": 95.0}, cfg)["passed"]
    missing = quality_gate(base, cfg)
    assert not missing["passed"] and "IW NLL not measured" in missing["message"]


def _assert_clean_failure(code: int, out: str, workdir: Path, *fragments: str) -> None:
    assert code != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in out
    if (workdir / "mlflow.db").exists():
        assert MlflowClient().search_registered_models() == []
    assert not (workdir / "outputs").exists()
    assert not list(workdir.glob(".vae-pipeline/data/*.parquet"))


def _run(cli, *settings: str):
    return cli("run", *[a for s in [*TINY, *settings] for a in ("--set", s)])


@pytest.mark.parametrize("case", ["idx_truncated", "corrupt_image", "nan", "label_out_of_range", "one_example"])
def test_bad_source_through_the_command(case, cli, workdir):
    settings, expected = SOURCE_CASES[case](workdir)
    code, out = _run(cli, *[f"data.{k}={v}" for k, v in settings.items()])
    _assert_clean_failure(code, out, workdir, *expected)


def test_a_threshold_the_config_cannot_measure_exits_2_before_anything_runs(cli, workdir):
    code, out = _run(cli, "validate.max_iw_nll=90")
    assert code == 2
    _assert_clean_failure(code, out, workdir, "'validate.max_iw_nll'", "needs validate.iw_samples > 0")
    assert not (workdir / "mlflow.db").exists()


def test_conditional_model_without_labels(cli, workdir):
    path = corpus.parquet_pixels(workdir / "x.parquet", label=None)
    code, out = _run(cli, "data.kind=parquet", f"data.path={path}", "model.conditional=true")
    _assert_clean_failure(code, out, workdir, "model.conditional=true needs labels")


def test_unwritable_output_directory_fails_before_training(cli, workdir):
    (workdir / "blocker").write_text("a file, not a folder")
    code, out = _run(cli, "generate.out_dir=blocker/samples")
    _assert_clean_failure(code, out, workdir, "generate.out_dir", "blocker", "not a directory")


def test_tracking_server_that_does_not_answer_fails_within_seconds(cli, workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = _run(cli, f"tracking.uri=http://127.0.0.1:{port}")
    _assert_clean_failure(code, out, workdir, f"http://127.0.0.1:{port}", "does not answer")


def test_generation_requests_that_cannot_be_served(cli, workdir):
    code, out = cli("generate", "--model", "models:/no-such-model@champion", "--num-samples", "5", "--out", "o")
    _assert_clean_failure(code, out, workdir, "no-such-model", "alias 'champion'")
    assert not (workdir / "o").exists()
    code, out = cli("generate", "--model", "vae-digits", "--num-samples", "5", "--out", "o")
    _assert_clean_failure(code, out, workdir, "expected models:/NAME@ALIAS")
    code, out = cli("generate", "--model", "models:/no-such-model@champion", "--num-samples", "0", "--out", "o")
    _assert_clean_failure(code, out, workdir, "--num-samples", "greater than or equal to 1")
    assert not (workdir / "o").exists()

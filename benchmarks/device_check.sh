#!/usr/bin/env bash
# The GPU checks of issues 13 and 18, as one command for a lent GPU machine (the `device` tool),
# whose python3 already holds torch, scikit-learn, pyarrow, OpenCV, PyYAML and pytest, but not
# pydantic, nor the MNIST files beside the checkout.
#
# Here, once per checkout (MNIST gz files and pydantic wheels for Python 3.12 into .device/, ignored):
#     bash benchmarks/device_check.sh prepare
# There (device run, carry [".device"], timeout_s 590), stages in the order given:
#     bash benchmarks/device_check.sh tests speed quality     # about 8 minutes, unmeasured
#     bash benchmarks/device_check.sh best                    # the likelihood preset, <= 10 min wanted
#   tests:   tests/test_cuda.py (graphed vs eager step, bf16, resume on CUDA)
#   speed:   benchmarks/train_cuda.py, eager vs graphed, fp32 and bf16 (target <= 0.15 s/epoch)
#   quality: benchmarks/quality.py --only mnist --device cuda (the sample-quality presets)
#   best:    benchmarks/mnist_best.py on CUDA (target IW-NLL <= 84.5 in <= 10 minutes)
# Each stage's output goes to $OUT/<stage>.log (what the device tool brings back) and stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=.device/mnist
WHEELS=.device/whl

prepare() {
    local raw=../shared/data/mnist/raw
    mkdir -p "$DATA" "$WHEELS"
    install -m 0644 "$raw"/*-ubyte.gz "$DATA"/ || { echo "prepare: no MNIST gz files in $raw" >&2; return 1; }
    # The versions this checkout's venv runs; pure-Python ones except pydantic-core.
    local pins
    pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null |
        grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions)==')
    # shellcheck disable=SC2086
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" $pins
    ls -l "$DATA" "$WHEELS"
}

on_device() {
    if ! ls "$WHEELS"/*.whl "$DATA"/train-images-idx3-ubyte.gz >/dev/null 2>&1; then
        echo "no $WHEELS or $DATA here: run 'bash benchmarks/device_check.sh prepare' first, and carry .device" >&2
        return 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl ||
        return 1
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name())'
}

stage() {
    local name=$1 && shift
    echo "=== $name: $* ($(date -u +%T))"
    "$@" 2>&1 | tee "${OUT:-/tmp}/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} ($(date -u +%T))"
}

[ $# -gt 0 ] || set -- tests speed quality
if [ "$1" = prepare ]; then
    prepare
    exit
fi
on_device || exit 1
for name in "$@"; do
    case $name in
    tests) stage tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py ;;
    speed) stage speed python3 benchmarks/train_cuda.py --data "$DATA" --epochs 3 ;;
    quality) stage quality python3 benchmarks/quality.py --only mnist --raw "$DATA" --device cuda ;;
    best) stage best python3 benchmarks/mnist_best.py --set "data.path=$PWD/$DATA" --set train.device=cuda --k 5000 ;;
    *) echo "unknown stage: $name (prepare, tests, speed, quality, best)" >&2 && exit 2 ;;
    esac
done

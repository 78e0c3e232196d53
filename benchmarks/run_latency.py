"""The default job as a new user runs it: `vae-pipeline run` after the install, in a fresh folder
(a new MLflow store, nothing cached), beside its references, measured in one run.

Each case is a fresh child process in its own empty folder, with no Prefect API configured (wall
time, and peak RSS as GNU time reports it):

- the import floor, `python -c "import torch, mlflow"`;
- `vae-pipeline run` (the steps in the command's process);
- `vae-pipeline run --prefect` (the same steps as a Prefect flow, on its temporary server).

    python benchmarks/run_latency.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_latency import child  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "flows.cli", "run"]
    cases = {
        "import floor: python -c 'import torch, mlflow'": [sys.executable, "-c", "import torch, mlflow"],
        "vae-pipeline run (in process)": cli,
        "vae-pipeline run --prefect (temporary server)": [*cli, "--prefect"],
    }
    root_dir = str(Path(__file__).resolve().parents[1])
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.repeats):
            for n, (name, command) in enumerate(cases.items()):  # interleaved: load hits every case alike
                folder = Path(scratch) / f"{i}-{n}"
                folder.mkdir()
                env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
                env.update({"PYTHONPATH": root_dir, "PREFECT_HOME": str(folder / ".prefect"),
                            "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
                figures[name].append(child(command, folder, env))
    print(f"| case ({os.cpu_count()} CPUs, {args.repeats} runs) | wall, best | wall, median | wall, each | peak RSS, best run |")
    print("|---|---|---|---|---|")
    for name, runs in figures.items():
        wall, rss = min(runs)
        walls = [w for w, _ in runs]
        print(f"| {name} | {wall:.2f} s | {statistics.median(walls):.2f} s | {', '.join(f'{w:.2f}' for w in walls)} "
              f"| {rss:.0f} MB |")


if __name__ == "__main__":
    main()

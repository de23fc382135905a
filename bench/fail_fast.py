"""How long a mistake takes to be reported: the error cases of issue 35, each a fresh process in an empty project
folder (IDCLAB_ROOT, the MLflow store in it), run in turn after one warm-up; prints each one's median wall time, its
exit code and error line, and whether it left anything in the folder (it must not; the bound is 2 s).

python bench/fail_fast.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CASES = {
    "missing data root": ["train.py", "data=idc", "data.root=/nonexistent"],
    "mistyped key": ["train.py", "trainer.max_epoch=1"],
    "empty store": ["evaluate.py"],
}


def run(args: list[str], root: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(PROJECT / args[0]), *args[1:]], env=env, cwd=root,
                          capture_output=True, text=True)
    return time.perf_counter() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs of each case")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    outcome: dict[str, tuple[int, str, list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for case in CASES.values():
            run(case, root)  # warm-up: the file cache, Python's bytecode
        for _ in range(args.runs):
            for name, case in CASES.items():
                seconds, done = run(case, root)
                times[name].append(seconds)
                outcome[name] = (done.returncode, done.stderr.strip(), sorted(p.name for p in root.iterdir()))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the "
          f"end; {args.runs} runs of each case, in turn, after a warm-up; bound 2 s")
    for name, case in CASES.items():
        code, error, left = outcome[name]
        values = times[name]
        print(f"{name:<18} median {statistics.median(values):5.2f} s (min {min(values):.2f}, max {max(values):.2f})"
              f"  exit {code}  left behind: {', '.join(left) or 'nothing'}")
        print(f"  python {' '.join(case)}\n  {error}")


if __name__ == "__main__":
    main()

"""Start-up of prediction: `python evaluate.py ckpt_path=CKPT 'predict=[one.png]'` (one patch, a fresh process)
against `python -c 'import torch'` (a fresh process), in turn (A B A B ...) after one warm-up of each; prints each
one's median wall time and the median of the pair-by-pair ratios A/B (issue 35's bound: at most 2.5).

python bench/predict_startup.py [--runs 7] [--model idcnet]

The checkpoint is the default training config's classifier (`--model` chooses the backbone) with its initial
weights, saved as training saves one (weights-only: `state_dict` and `hyper_parameters`); the patch is a 50x50
Kaggle-named PNG of random pixels. Both live in a temporary folder, which is also the project root of the predict
runs (IDCLAB_ROOT: their outputs go there). Nothing is trained and no data is read. Also printed: the modules the
predict run imported that a plain-torch prediction must not need (expected: none).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from idclab.config.build import build_classifier

PROJECT = Path(__file__).resolve().parents[1]
UNWANTED = ("pytorch_lightning", "lightning", "mlflow", "sklearn", "pandas", "scipy", "matplotlib", "torchvision",
            "timm", "albumentations", "imblearn", "torchmetrics")


def make_checkpoint(folder: Path, model: str) -> Path:
    """The default config's classifier (initial weights), saved as training saves its checkpoints."""
    with initialize_config_dir(str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"paths.root={folder}", f"paths.output_dir={folder}"])
    config = OmegaConf.to_container(cfg, resolve=True)
    classifier = build_classifier(config, [700, 300], [0.8, 0.6, 0.75], [0.1, 0.15, 0.1], threshold=0.5)
    path = folder / "best.ckpt"
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, path)
    return path


def make_patch(folder: Path) -> Path:
    """A 50x50 RGB patch of random pink-purple pixels, named as the Kaggle patches are."""
    rng = np.random.default_rng(0)
    pixels = np.clip(np.array([200, 120, 180]) + rng.integers(-60, 60, (50, 50, 3)), 0, 255).astype(np.uint8)
    path = folder / "10253_idx5_x1001_y1001_class1.png"
    Image.fromarray(pixels).save(path)
    return path


def wall(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from start to exit of a fresh process; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def imported(command: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    """The top-level packages a run of `command` imports (`python -X importtime`)."""
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=env, cwd=cwd, capture_output=True,
                          text=True)
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)$", done.stderr, re.MULTILINE)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="counted runs of each command")
    parser.add_argument("--model", default="idcnet", help="the backbone (conf/model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint, patch = make_checkpoint(root, args.model), make_patch(root)
        env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        predict = [sys.executable, str(PROJECT / "evaluate.py"), f"ckpt_path={checkpoint}", f"predict=[{patch}]"]
        torch_only = [sys.executable, "-c", "import torch"]
        wall(predict, env, root), wall(torch_only, env, root)  # warm-up: the file cache, Python's bytecode
        times: dict[str, list[float]] = {"predict": [], "torch": []}
        for _ in range(args.runs):
            times["predict"].append(wall(predict, env, root))
            times["torch"].append(wall(torch_only, env, root))
        extra = sorted(imported(predict, env, root) & set(UNWANTED))
    ratios = [p / t for p, t in zip(times["predict"], times["torch"], strict=True)]
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the end; model={args.model}; {args.runs} runs of each, in turn, after a "
          "warm-up")
    for name, label in (("predict", "evaluate.py one patch"), ("torch", "python -c 'import torch'")):
        values = times[name]
        print(f"{label:<26} median {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    print(f"ratio, pair by pair        median {statistics.median(ratios):6.2f}    (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}); bound 2.5")
    print(f"unwanted imports: {', '.join(extra) or 'none'}")


if __name__ == "__main__":
    main()

"""The peer table's cheap columns: each backbone of conf/study/peers.yaml built as its study job builds it (the
recipe's inputs: patch + neighbourhood view, 6 channels), on synthetic patches (random uint8, no data read):
parameters, MFLOPs per patch, inference patches/s and one training epoch's time, each also as a ratio to IDCNet's,
measured in one run (the models take turns in every round; the best round of each is kept).

python bench/backbones.py [--patches 1905] [--rounds 2] [--only idcnet resnet18 ...]

One epoch is `--patches` patches (default: the synthetic default's 1905 training patches) in the recipe's batches
(data.batch_size) through the classifier's forward, loss, backward and optimizer step, as in training (no data
loading, augmentation or validation). Inference is `--infer-batches` batches of 256 in eval mode without gradients.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from idclab.classifier.module import IDCClassifier
from idclab.config.build import build_classifier

PROJECT = Path(__file__).resolve().parents[1]
STUDY = PROJECT / "conf" / "study" / "peers.yaml"
INFER_BATCH = 256


def classifiers(only: list[str] | None) -> dict[str, tuple[IDCClassifier, dict]]:
    """Each strategy of the peer study, built from its job's config (study common overrides + the strategy's)."""
    study = OmegaConf.load(STUDY).study
    built = {}
    with initialize_config_dir(str(PROJECT / "conf"), version_base="1.3"):
        for name, overrides in study.strategies.items():
            if only and name not in only:
                continue
            cfg = compose("train", overrides=[*study.common, *overrides, f"paths.root={PROJECT}",
                                              "paths.output_dir=/tmp"])
            config = OmegaConf.to_container(cfg, resolve=True)
            built[name] = (build_classifier(config, [2, 1], [0.5] * 3, [0.25] * 3), config)
    return built


def patches(count: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, 50, 50), dtype=torch.uint8, generator=generator)


def mflops(classifier: IDCClassifier, channels: int) -> float:
    """Forward MFLOPs of one patch through the backbone (FLOPs = 2 x multiply-adds, torch's count)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        classifier.eval().model(torch.zeros(1, channels, 50, 50))
    return counter.get_total_flops() / 1e6


def inference_rate(classifier: IDCClassifier, images: torch.Tensor) -> float:
    """Patches/s through the classifier (standardisation included) in eval mode, after one warm-up batch."""
    classifier.eval()
    batches = images.split(INFER_BATCH)
    with torch.inference_mode():
        classifier(batches[0])
        start = time.perf_counter()
        for batch in batches:
            classifier(batch)
    return len(images) / (time.perf_counter() - start)


def epoch_seconds(classifier: IDCClassifier, images: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    """Seconds of one training epoch over `images` (forward, loss, backward, optimizer step), after a warm-up step."""
    classifier.train()
    optimizer = classifier.configure_optimizers()
    steps = list(zip(images.split(batch), targets.split(batch), strict=True))
    start = 0.0
    for number, (x, y) in enumerate(itertools.chain(steps[:1], steps)):
        if number == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        classifier.criterion(classifier(x).float(), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=1905, help="training patches in one epoch")
    parser.add_argument("--infer-batches", type=int, default=4, help=f"inference batches of {INFER_BATCH}")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every model; the best of each is kept")
    parser.add_argument("--only", nargs="*", help="strategies to measure (idcnet is always measured)")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = classifiers([*args.only, "idcnet"] if args.only else None)
    channels = {name: int(classifier.example_input_array.shape[1]) for name, (classifier, _) in models.items()}
    batch = next(iter(models.values()))[1]["data"]["batch_size"]
    print(f"{len(models)} backbones, {sorted(set(channels.values()))} input channels, {torch.get_num_threads()} "
          f"threads, load average {os.getloadavg()[0]:.1f} at the start")
    rates: dict[str, float] = {}
    epochs: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name, (classifier, _) in models.items():
            images = patches(args.patches, channels[name], seed=round_)
            targets = (torch.rand(args.patches, generator=torch.Generator().manual_seed(round_)) < 0.3).float()
            scored = patches(INFER_BATCH * args.infer_batches, channels[name], seed=round_)
            rate, epoch = inference_rate(classifier, scored), epoch_seconds(classifier, images, targets, batch)
            rates[name], epochs[name] = max(rates.get(name, 0.0), rate), min(epochs.get(name, float("inf")), epoch)
            print(f"round {round_ + 1}: {name}: {rate:.0f} patches/s, epoch {epoch:.1f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| backbone | model | params | MFLOPs/patch | inference patches/s | x IDCNet | epoch s | x IDCNet |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (classifier, config) in models.items():
        model = config["model"]["name"]
        params = sum(p.numel() for p in classifier.model.parameters())
        print(f"| {name} | {model} | {params / 1e6:.3f} M | {mflops(classifier, channels[name]):.1f} | "
              f"{rates[name]:.0f} | {rates[name] / rates['idcnet']:.2f} | {epochs[name]:.1f} | "
              f"{epochs[name] / epochs['idcnet']:.2f} |")


if __name__ == "__main__":
    main()

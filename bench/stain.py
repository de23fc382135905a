"""Cost of stain normalisation: images/s of stain=none|reinhard|macenko in one run, for the normaliser
alone (inference-time cost) and for an IDCNet training step with it (training-time cost), with the
per-image loop of torchstain's torch backend for comparison; the ratios are what to read.

python bench/stain.py [--dataset synthetic|sample]
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from benchdata import arguments, indexed

from idclab.config.build import build_classifier
from idclab.models.stain import Macenko, NoStain, Reinhard, StainNormaliser

BATCH, PATCHES, LOOP_PATCHES, REPEATS = 128, 2048, 256, 2
METHODS = {"none": NoStain, "reinhard": Reinhard, "macenko": Macenko}
CONFIG = {"model": {"name": "idcnet"}, "loss": {"name": "bce"}, "optim": {"lr": 1e-3, "weight_decay": 1e-4}}


def interleaved_rates(steps: dict[str, object], batches: list[torch.Tensor]) -> dict[str, float]:
    """Images/s of each step, running every step on each batch in turn (REPEATS passes), so a shared machine's
    drifting load hits all of them alike."""
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(REPEATS):
        for batch in batches:
            for name, step in steps.items():
                start = time.perf_counter()
                step(batch)
                seconds[name] += time.perf_counter() - start
    images = REPEATS * sum(len(b) for b in batches)
    return {name: images / seconds[name] for name in steps}


def normaliser_step(normaliser: StainNormaliser):
    @torch.no_grad()
    def step(images: torch.Tensor) -> None:
        normaliser(images.float() / 255)

    return step


def training_step(name: str, fitted: StainNormaliser):
    classifier = build_classifier(CONFIG | {"stain": {"name": name}}, [3, 1], [0.5] * 3, [0.25] * 3)
    classifier.stain.load_state_dict(fitted.state_dict())
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3)
    targets = torch.zeros(BATCH)

    def step(images: torch.Tensor) -> None:
        optimizer.zero_grad()
        classifier.criterion(classifier(images), targets[: len(images)]).backward()
        optimizer.step()

    return step


def torchstain_rate(name: str, batches: list[torch.Tensor]) -> float:
    """Images/s of torchstain's torch backend, one image at a time (its API), on LOOP_PATCHES patches."""
    import torchstain

    normaliser = torchstain.normalizers.ReinhardNormalizer(backend="torch") if name == "reinhard" else \
        torchstain.normalizers.MacenkoNormalizer(backend="torch")
    images = torch.cat(batches)[:LOOP_PATCHES]
    if name == "reinhard":
        normaliser.fit(images[0])
    start, done = time.perf_counter(), 0
    for image in images:
        with contextlib.suppress(Exception):  # torchstain raises on patches with too little stain
            normaliser.normalize(image) if name == "reinhard" else normaliser.normalize(image, stains=False)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    args = arguments(__doc__)
    index, cache = indexed(args)
    rows = np.sort(np.random.default_rng(0).choice(len(index), size=min(PATCHES, len(index)), replace=False))
    images = torch.from_numpy(np.asarray(cache.images[rows])).permute(0, 3, 1, 2).contiguous()
    batches = list(images.split(BATCH))
    print(f"\nStain normalisation on {args.dataset}: {len(images)} patches, batch {BATCH}, {REPEATS} passes, "
          f"{torch.get_num_threads()} threads, CPU")
    print(f"{'stain':<9} {'fit s':>6} {'normaliser img/s':>17} {'torchstain loop img/s':>22} "
          f"{'train step img/s':>17} {'train ratio':>12}")
    fitted, fit_seconds, steps = {}, {}, {}
    for name, cls in METHODS.items():
        fitted[name] = cls()
        start = time.perf_counter()
        fitted[name].fit(images[:1000].float() / 255)
        fit_seconds[name] = time.perf_counter() - start
        steps[name] = (normaliser_step(fitted[name]), training_step(name, fitted[name]))
        for step in steps[name]:
            step(batches[0])  # warm-up
    alone = interleaved_rates({name: pair[0] for name, pair in steps.items()}, batches)
    train = interleaved_rates({name: pair[1] for name, pair in steps.items()}, batches)
    ratios = {name: train[name] / train["none"] for name in METHODS}
    loops = {name: torchstain_rate(name, batches) for name in ("reinhard", "macenko")}
    for name in METHODS:
        loop = loops.get(name, float("nan"))
        print(f"{name:<9} {fit_seconds[name]:>6.2f} {alone[name]:>17.0f} {loop:>22.0f} {train[name]:>17.0f} "
              f"{ratios[name]:>12.2f}")
    print(f"SUMMARY stain training throughput vs none: reinhard {ratios['reinhard']:.2f}, "
          f"macenko {ratios['macenko']:.2f}; batched vs torchstain loop: reinhard "
          f"{alone['reinhard'] / loops['reinhard']:.1f}x, macenko {alone['macenko'] / loops['macenko']:.1f}x")


if __name__ == "__main__":
    main()

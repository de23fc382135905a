"""IDCNet (the default) vs the seed-style CNN: parameters, MFLOPs per patch, training images/s on this
machine, and validation AUPRC / F1 after the same number of epochs on the same data and split.

python bench/models.py [--dataset sample|synthetic] [--epochs 8]
"""

from __future__ import annotations

import argparse
import tempfile

import pytorch_lightning as pl
import torch
from benchdata import PROJECT, SHARED_SAMPLE, indexed
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from torch.utils.flop_counter import FlopCounterMode
from training_efficiency import BATCH, model_only_speed

from idclab.data.augment import basic
from idclab.data.datamodule import PatchDataModule, PreparedData
from idclab.data.split import stratified
from idclab.training.pipeline import train

MODELS = ("cnn", "idcnet")


def quality(model: str, data_args: list[str], epochs: int, store: str) -> dict[str, float]:
    """Train `model` for `epochs` and return its best validation AUPRC and the F1 at that epoch."""
    with initialize_config_dir(str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *data_args, f"trainer.max_epochs={epochs}",
                                          "trainer.enable_progress_bar=false", "threshold=fixed",
                                          f"paths.root={PROJECT}", f"paths.output_dir={tempfile.mkdtemp()}",
                                          f"logger.tracking_uri={store}", f"logger.experiment_name=bench_{model}"])
    train(cfg)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(f"bench_{model}").experiment_id])
    auprc = client.get_metric_history(run.info.run_id, "val_auprc")
    best = max(auprc, key=lambda m: m.value)
    f1 = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_f1")}
    return {"val_auprc": best.value, "val_f1": f1[best.step], "epoch": best.step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=["synthetic", "sample"], default="sample")
    parser.add_argument("--patients", type=int, default=380)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    data_args = (["data=idc", f"data.root={SHARED_SAMPLE}"] if args.dataset == "sample"
                 else [f"data.synthetic.n_patients={args.patients}", "data.synthetic.seed=7"])
    pl.seed_everything(0)
    index, cache = indexed(args)
    datamodule = PatchDataModule(PreparedData("bench", index, cache, stratified(index.patients, index.labels)),
                                 BATCH, 0, augmentation=basic())
    store = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    rows = {}
    for model in MODELS:
        from training_efficiency import classifier_for

        network = classifier_for(model, datamodule.data).model
        with FlopCounterMode(display=False) as counter:
            network.eval()(torch.zeros(1, 3, 50, 50))
        rows[model] = {"params": sum(p.numel() for p in network.parameters()),
                       "mflops": counter.get_total_flops() / 1e6,
                       "train_img_s": max(model_only_speed(model, datamodule) for _ in range(2))}
    for model in MODELS:
        rows[model] |= quality(model, data_args, args.epochs, store)
    print(f"\nModels on {args.dataset} ({len(index)} patches), {args.epochs} epochs each, same split and seed, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':<8} {'params':>8} {'MFLOPs':>7} {'train img/s':>12} {'best val AUPRC':>15} {'val F1':>7}")
    for model, r in rows.items():
        print(f"{model:<8} {r['params']:>8} {r['mflops']:>7.1f} {r['train_img_s']:>12.0f} "
              f"{r['val_auprc']:>15.4f} {r['val_f1']:>7.4f}")
    speedup = rows["idcnet"]["train_img_s"] / rows["cnn"]["train_img_s"]
    print(f"SUMMARY models: idcnet trains {speedup:.2f}x faster than the seed CNN (target >= 2x); val AUPRC "
          f"{rows['idcnet']['val_auprc']:.4f} vs {rows['cnn']['val_auprc']:.4f}, val F1 "
          f"{rows['idcnet']['val_f1']:.4f} vs {rows['cnn']['val_f1']:.4f} (target: equal or better)")


if __name__ == "__main__":
    main()

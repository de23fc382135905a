"""What test-time augmentation (`evaluate.py tta=true`) buys, measured on the recipe study's own fold models.

For every fold model of the given cross-validation runs (default: the recipe study's `baseline + context` rows,
seeds 1 and 2), the fold's validation and out-of-fold patients are scored twice: each patch alone, and averaged
over its 8 flips/rotations (TTA). In each condition, spatial context (none, radius 1, 2) is compared exactly as
cross-validation does (`idclab.crossval.context_rules`: the weight, then the max-F1 threshold, tuned on that
fold's validation patients in the same TTA condition, then applied out of fold). Without TTA this reproduces the
run's own `cv/context_rules.csv`, which the script checks. (`evaluate.py tta=true` re-tunes only the threshold
and keeps the weight saved without TTA. Here the mean radius-1 weight over folds was 0.68 with TTA for both seeds,
against 0.68 and 0.70 without.)

Rule (fixed 2026-12-01, before the first result): TTA is called better for a context when, for every seed, its
`val_crossfit_auprc` exceeds the same context's without TTA by more than the seed range of that metric without
TTA; worse when every seed's difference is below minus that range. The OOF columns are the estimate, not the
chooser.

    python bench/tta_study.py --tracking-uri sqlite:////work/study/mlflow.db   # -> bench/results/tta_study.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from recipe_study import separated, write_table  # the study's rule: beyond the seed range, every seed

from idclab.build import load_classifier
from idclab.crossval import FOLD_TAG, context_rules, patch_frame
from idclab.data.datamodule import PatchDataModule, prepare_data
from idclab.data.split import PatientSplit
from idclab.module import IDCClassifier
from idclab.thresholds import rule_of

PROJECT = Path(__file__).resolve().parents[1]
STUDY = PROJECT / "bench" / "results" / "recipe_study.csv"
RESULTS = PROJECT / "bench" / "results" / "tta_study.csv"
KEYS = ["run_id", "seed", "tta", "context"]


def fold_runs(client: MlflowClient, parent_id: str) -> list[tuple[int, str]]:
    """(fold, best checkpoint path) of every fold child of a cross-validation parent run, in fold order."""
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    folds = sorted((int(c.data.tags[FOLD_TAG]), c.data.tags["best_checkpoint"]) for c in children)
    if not folds:
        sys.exit(f"run {parent_id} has no fold runs: is it a cross-validation parent run in this store?")
    return folds


def scored(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule, split: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """P(IDC) and index rows of one split's patches, with the classifier's current `tta` setting."""
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    probs, rows = (torch.cat(parts).numpy() for parts in zip(*trainer.predict(classifier, loader), strict=True))
    return probs, rows


def fold_frames(checkpoint: str, fold: int, trainer: pl.Trainer, cached: dict) -> dict[bool, tuple[pd.DataFrame, ...]]:
    """The fold's (validation, out-of-fold) prediction frames without and with TTA."""
    classifier = load_classifier(checkpoint)
    config = classifier.hparams["config"]
    key = config["data"]["root"]
    if key not in cached:  # scan and decode once; each fold then selects its recorded patients
        cached[key] = prepare_data(OmegaConf.create(config["data"]), OmegaConf.create(config["split"]),
                                   required=("train", "val"))
    data = cached[key]
    usable = np.flatnonzero(data.cache.usable)
    names = classifier.hparams["split_patients"]
    rows = {s: usable[np.isin(data.index.patients[usable], names[s])] for s in ("train", "val", "test")}
    fold_data = replace(data, split=PatientSplit(names, rows, {"fold_of": "cv"}))
    datamodule = PatchDataModule(fold_data, 256, neighbourhood=classifier.input_views)
    frames = {}
    for tta in (False, True):
        classifier.tta = tta
        parts = []
        for split in ("val", "test"):
            probs, order = scored(trainer, classifier, datamodule, split)
            parts.append(patch_frame(fold_data, fold, order, probs, probs))
        frames[tta] = tuple(parts)
    return frames


def study(client: MlflowClient, parent_id: str, seed: int) -> pd.DataFrame:
    """The context comparison without and with TTA for one cross-validation run."""
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    val, oof, cached = {False: [], True: []}, {False: [], True: []}, {}
    for fold, checkpoint in fold_runs(client, parent_id):
        started = time.time()
        for tta, (fold_val, fold_oof) in fold_frames(checkpoint, fold, trainer, cached).items():
            val[tta].append(fold_val)
            oof[tta].append(fold_oof)
        print(f"  fold {fold}: {time.time() - started:.0f} s", flush=True)
    rule = rule_of(OmegaConf.create({"name": "max_f1"}))
    tables = [context_rules(pd.concat(val[tta]), pd.concat(oof[tta]), rule).assign(tta=tta) for tta in (False, True)]
    return pd.concat(tables).assign(run_id=parent_id, seed=seed)


def reproduces(client: MlflowClient, table: pd.DataFrame, parent_id: str) -> bool:
    """Whether the rows without TTA equal the run's own `cv/context_rules.csv` (same models, same rule); prints
    what differs."""
    logged = pd.read_csv(client.download_artifacts(parent_id, "cv/context_rules.csv")).set_index("context")
    ours = table[~table["tta"]].set_index("context")
    same = True
    for column in ("val_crossfit_auprc", "auroc", "balanced_accuracy"):
        if not np.allclose(ours[column], logged.loc[ours.index, column], atol=1e-4):
            same = False
            print(f"Warning: without TTA, {column} differs from the run's cv/context_rules.csv: "
                  f"{ours[column].round(4).tolist()} vs {logged.loc[ours.index, column].round(4).tolist()}")
    return same


def verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """Per context: val_crossfit_auprc and OOF metrics mean over seeds, without and with TTA, and the rule's call."""
    rows = []
    for context, group in results.groupby("context"):
        without = group[~group["tta"]].set_index("seed")["val_crossfit_auprc"]
        with_tta = group[group["tta"]].set_index("seed")["val_crossfit_auprc"]
        gains, spread = (with_tta - without).dropna(), float(without.max() - without.min())
        call = separated(gains, without)
        for tta, part in group.groupby("tta"):
            rows.append({"context": context, "tta": tta, "seeds": len(part),
                         **{c: f"{part[c].mean():.4f} ± {part[c].std():.4f}" for c in
                            ("val_crossfit_auprc", "auroc", "auprc", "f1", "balanced_accuracy")},
                         "Δ val_crossfit_auprc (per seed)": ", ".join(f"{g:+.4f}" for g in gains) if tta else "",
                         "seed range without": f"{spread:.4f}" if tta else "", "TTA": call if tta else ""})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}")
    parser.add_argument("--strategy", default="baseline + context", help="the recipe study rows whose runs to use")
    parser.add_argument("--table", action="store_true", help="print the verdicts of the results so far")
    args = parser.parse_args()
    if not args.table:
        client = MlflowClient(args.tracking_uri)
        runs = pd.read_csv(STUDY)
        runs = runs[runs["strategy"] == args.strategy]
        if runs.empty:
            sys.exit(f"no '{args.strategy}' rows in {STUDY}")
        done = set(pd.read_csv(RESULTS)["run_id"]) if RESULTS.exists() else set()
        for run in runs.itertuples():
            if run.run_id in done:
                continue
            print(f"{args.strategy}, seed {run.seed} (run {run.run_id})", flush=True)
            table = study(client, run.run_id, int(run.seed))
            table["reproduces_run"] = reproduces(client, table, run.run_id)
            earlier = pd.read_csv(RESULTS) if RESULTS.exists() else None
            write_table(pd.concat([earlier, table], ignore_index=True), RESULTS)  # whole, never a half row
    print(verdicts(pd.read_csv(RESULTS)).to_markdown(index=False))


if __name__ == "__main__":
    main()

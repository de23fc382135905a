"""Datasets the benchmarks run on: the synthetic set scaled up, and the real IDC sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from idclab.data.cache import load_or_build
from idclab.data.layout import PatchIndex, scan
from idclab.data.synthetic import SyntheticSpec, generate

PROJECT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = PROJECT.parent / "shared" / "data" / "idc-sample"
BENCH_DATA = PROJECT / "data" / "bench"


def arguments(description: str) -> argparse.Namespace:
    """Common options: which dataset, and how many patients of synthetic data (380 give ~51,000 patches)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", choices=["synthetic", "sample"], default="synthetic")
    parser.add_argument("--patients", type=int, default=380, help="synthetic patients (380: ~51k patches)")
    return parser.parse_args()


def dataset_root(args: argparse.Namespace) -> Path:
    """The folder of patches to benchmark on (generated on first use for synthetic)."""
    if args.dataset == "sample":
        if not SHARED_SAMPLE.is_dir():
            raise SystemExit(f"{SHARED_SAMPLE} is not present")
        return SHARED_SAMPLE
    return generate(BENCH_DATA / "synthetic", SyntheticSpec(n_patients=args.patients, seed=7))


def indexed(args: argparse.Namespace) -> tuple[PatchIndex, object]:
    """The index and (built on first use) cache of the benchmark dataset."""
    index = scan(dataset_root(args))
    return index, load_or_build(index, BENCH_DATA / "cache")

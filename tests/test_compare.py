"""idclab-compare: mean +- std over seeds per strategy, written and logged."""

from __future__ import annotations

import csv

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from idclab.compare import METRICS, compare, main
from idclab.tracking import KIND_TAG, connect


def make_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client, experiment_id = connect(uri, "study", str(tmp_path / "artifacts"))
    values = {("bce", "none"): [0.60, 0.70], ("weighted", "none"): [0.80, 0.84], ("focal", "oversample"): [0.75]}
    for (loss, sampler), f1s in values.items():
        for seed, f1 in enumerate(f1s, 1):
            run = client.create_run(experiment_id, tags={KIND_TAG: "train", "model": "IDCNet", "loss": loss,
                                                         "sampler": sampler, "threshold": "max_f1", "sweep": "s1"})
            client.log_param(run.info.run_id, "seed", str(seed))
            for metric in METRICS:
                client.log_metric(run.info.run_id, metric, f1 if metric == "test_f1" else 0.5)
            client.set_terminated(run.info.run_id, "FINISHED")
    failed = client.create_run(experiment_id, tags={KIND_TAG: "train", "loss": "bce"})
    client.log_metric(failed.info.run_id, "test_f1", 0.0)
    client.set_terminated(failed.info.run_id, "FAILED")  # not compared
    return uri


def test_compare_groups_seeds_and_ranks_by_f1(tmp_path):
    uri = make_store(tmp_path)
    rows = compare(uri, "study", tmp_path / "out")
    assert [(r["loss"], r["runs"]) for r in rows] == [("weighted", 2), ("focal", 1), ("bce", 2)]
    assert rows[0]["test_f1_mean"] == pytest.approx(0.82)
    assert rows[0]["test_f1_std"] == pytest.approx(0.028284, abs=1e-5)
    assert rows[2]["seeds"] == "1 2"
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "| weighted | none | max_f1 | 2 | 0.820 ± 0.028 |" in markdown.replace("IDCNet | ", "")
    with open(tmp_path / "out" / "comparison.csv") as handle:
        table = list(csv.DictReader(handle))
    assert float(table[0]["test_f1_mean"]) == pytest.approx(0.82)
    with Image.open(tmp_path / "out" / "comparison.png") as image:
        assert image.size[0] > 500
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("study")
    (logged,) = client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = 'compare'")
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "comparison")} == {
        "comparison/comparison.md", "comparison/comparison.csv", "comparison/comparison.png"}


def test_command_line_and_errors(tmp_path, capsys):
    uri = make_store(tmp_path)
    main(["--experiment", "study", "--tracking-uri", uri, "--out", str(tmp_path / "cli"), "--sweep", "s1",
          "--no-log"])
    assert "weighted" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no finished training runs"):
        main(["--experiment", "study", "--tracking-uri", uri, "--sweep", "other", "--out", str(tmp_path / "x")])

"""A quiet console: one header line, a line per epoch, the test report in a few lines, where the run is and what to
run next; the details with verbose=true. Run descriptions and system metrics for the MLflow UI."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import PROJECT, TINY_DATA, TINY_TRAINER
from mlflow.tracking import MlflowClient

from idclab.evaluation.reporting import brief_report, headline
from idclab.tracking.inputs import settings_that_apply
from idclab.tracking.runs import EXPERIMENT_KIND_TAG, MODEL_TRAINING, TrackedRun, connect, run_link, ui_command
from idclab.training.briefing import closing, data_words, header
from idclab.training.progress import EpochBar, epoch_line, epoch_number, progress_callbacks
from idclab.verbosity import DetailFilter, detail, set_verbose

SUMMARY = {"source": "synthetic", "patches": 100, "patients": {"train": ["a", "b"], "val": ["c"], "test": ["d"]},
           "split_counts": {"train": {"negative": 40, "positive": 20}, "val": {"negative": 15, "positive": 5},
                            "test": {"negative": 12, "positive": 8}},
           "skipped_files": {}}


def test_epochs_count_from_one_in_the_line_and_the_bar():
    assert epoch_number(0, 1) == "1/1" and epoch_number(9, 10) == "10/10" and epoch_number(2, -1) == "3"
    metrics = {"train_loss": torch.tensor(0.5), "val_auprc": 0.9, "val_f1": 0.8, "val_balanced_accuracy": 0.85,
               "val_loss": 0.25}
    assert epoch_line(9, 10, metrics, 2.0) == (
        "epoch 10/10  train_loss 0.5000  val_auprc 0.9000  val_f1 0.8000  val_bac 0.8500  2.0 s")
    assert epoch_line(0, 1, metrics, 1.0, monitor="val_loss").split("  ")[-2] == "val_loss 0.2500"  # the monitored
    trainer = SimpleNamespace(callback_metrics=metrics | {"v_num": 3})
    assert EpochBar("val_loss").get_metrics(trainer, None) == {  # no v_num; the same metrics as the line
        "train_loss": "0.5000", "val_auprc": "0.9000", "val_f1": "0.8000", "val_bac": "0.8500", "val_loss": "0.2500"}


def test_no_bar_outside_a_terminal():
    assert not sys.stdout.isatty()  # pytest captures stdout
    callbacks, bar = progress_callbacks(True, "val_auprc")
    assert not bar and [type(c).__name__ for c in callbacks] == ["EpochLine"]


def test_the_brief_report_counts_by_hand():
    targets = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    called = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    results = {f"test_{k}{end}": v for k, v in (("balanced_accuracy", 0.8), ("auroc", 0.9), ("f1", 0.75))
               for end in ("", "_ci_low", "_ci_high")}
    text = brief_report(targets, called, 2, results, 100, "P(IDC) >= 0.5000")
    lines = text.splitlines()
    assert lines[0] == "Test: 10 patches of 2 patients held out from training; IDC called at P(IDC) >= 0.5000"
    assert lines[2].split() == ["IDC", "0.7500", "0.7500", "0.7500", "4"]  # 3 of 4 called calls right, 3 of 4 found
    assert lines[3].split() == ["non-IDC", "0.8333", "0.8333", "0.8333", "6"]  # 5 of 6 right, 5 of 6 cleared
    assert lines[4] == "  3 of 4 IDC patches found; 3 of 4 IDC calls right; 5 of 6 non-IDC patches called non-IDC"
    assert lines[5].startswith("  balanced accuracy 0.8000 [0.8000, 0.8000], AUROC 0.9000")
    assert lines[5].endswith("(95% intervals, 100 resamples of the patients; from 2 patients: rough)")
    many = brief_report(targets, called, 10, results, 100, "P(IDC) >= 0.5000").splitlines()[5]
    assert many.endswith("(95% intervals, 100 resamples of the patients)")
    assert "pre " not in text and "iba" not in text  # imbalanced-learn's table: artifacts only


def test_the_description_names_the_validation_score_and_test_intervals():
    results = {"test_balanced_accuracy": 0.9, "test_balanced_accuracy_ci_low": 0.8,
               "test_balanced_accuracy_ci_high": 0.95, "test_auroc": 0.97, "test_f1": 0.85}
    text = headline(results, ("val_auprc", 0.97654))
    assert text.splitlines()[0] == ("val_auprc 0.9765 on validation; test balanced accuracy 0.9000 [0.8000, 0.9500], "
                                    "AUROC 0.9700, F1 0.8500")  # one line: the runs table shows the first
    assert headline({"oof_auroc": 0.9}, prefix="oof_").startswith("out of fold AUROC 0.9000\n")


def test_header_and_closing():
    assert data_words(SUMMARY) == "synthetic data: 100 patches of 4 patients (60 train, 20 val, 20 test)"
    assert "3 files skipped" in data_words(SUMMARY | {"skipped_files": {"bad_name": 2, "unreadable": 1}})
    patch_split = SUMMARY | {"patients": {split: ["a", "b"] for split in ("train", "val", "test")}}
    assert "of 2 patients" in data_words(patch_split)  # split=patches: the same patients in every split
    link = run_link("sqlite:////x/mlflow.db", "1", "abc")
    assert link == "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
    assert run_link("http://host:5000/", "1", "abc") == (
        "http://host:5000/#/experiments/1/runs/abc?workflowType=machine_learning")
    assert run_link("databricks://profile", "1", "abc") is None and ui_command("http://host:5000") is None
    line = header(["loss=focal"], SUMMARY, "idc", link)
    assert line == (f"Training loss=focal on {data_words(SUMMARY)} -> MLflow experiment idc, run {link}")
    assert header([], SUMMARY, "idc", None).startswith("Training the defaults on synthetic data")
    uri = "sqlite:////x/mlflow.db"
    text = closing("loss=focal", "abc", "idc", Path("/out"), uri, link, ui_command(uri), ("val_auprc", 0.9))
    assert text.splitlines()[0] == ("Done: run loss=focal (abc) in MLflow experiment idc; best val_auprc 0.9000 "
                                    "on validation")
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1   # then open {link}" in text
    assert "evaluate.py   # test the best run of experiment idc" in text and "'predict=[" in text
    assert "logger.experiment_name=other" in closing("x", "abc", "other", Path("/o"), uri, link, None, ("m", 1.0))
    assert "Next:" not in closing("x", "abc", "idc", Path("/o"), uri, link, None, ("m", 1.0), next_steps=False)
    folds = closing("cv5 defaults", "abc", "idc", Path("/o"), uri, link, None, ("mean val_auprc", 0.9),
                    model=Path("/o/checkpoints/ensemble.ckpt"), tested=False)  # a cross-validation of every patient
    assert "evaluate.py ckpt_path=/o/checkpoints/ensemble.ckpt 'predict=[" in folds and "test the" not in folds
    assert "out-of-fold report" in folds


def test_details_only_with_verbose(capsys):
    handler = logging.StreamHandler(sys.stdout)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        set_verbose(False)
        detail("the whole config")
        assert capsys.readouterr().out == "" and any(isinstance(f, DetailFilter) for f in handler.filters)
        record = logging.LogRecord("pytorch_lightning.utilities.rank_zero", logging.INFO, "", 0, "GPU", (), None)
        warning = logging.LogRecord("pytorch_lightning.utilities.rank_zero", logging.WARNING, "", 0, "w", (), None)
        other = logging.LogRecord("hydra", logging.INFO, "", 0, "Launching 2 jobs", (), None)
        assert [handler.filter(r) for r in (record, warning, other)] == [False, True, True]
        set_verbose(True)
        detail("the whole config")
        assert capsys.readouterr().out == "the whole config\n" and handler.filter(record)
    finally:
        set_verbose(False)
        root.removeHandler(handler)


def test_params_leave_out_settings_whose_switch_is_off():
    params = {"cv.folds": "None", "cv.val": "0.15", "cv.seed": "0", "optim.schedule": "none",
              "optim.warmup_epochs": "2", "optim.lr": "0.001", "loss": "weighted"}
    assert settings_that_apply(params) == {"cv.folds": "None", "optim.schedule": "none", "optim.lr": "0.001",
                                           "optim.warmup_epochs": "2", "loss": "weighted"}  # warms up without one
    on = params | {"cv.folds": "5", "optim.schedule": "cosine"}
    assert settings_that_apply(on) == on


def test_experiments_open_on_their_training_runs(tmp_path, new_store):
    uri = new_store(tmp_path)
    client, experiment_id = connect(uri, "idc")
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    older = client.create_experiment("older")  # made before the project tagged its experiments
    assert connect(uri, "older")[1] == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_a_run_shorter_than_the_sampling_interval_gets_system_metrics(tmp_path, new_store):
    client, experiment_id = connect(new_store(tmp_path), "idc")
    started = time.perf_counter()
    with TrackedRun(client, experiment_id, "short", {}, system_metrics=30) as run:
        pass
    assert time.perf_counter() - started < 25  # ended long before a sample was due
    metrics = client.get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics


def read_or_end(fd: int) -> bytes:
    """The next bytes from a terminal's leader side, or b"" once the process has closed it."""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: no process holds the terminal any more
        return b""


def run_entry(*args: str, root: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           **(env or {})}
    return subprocess.run([sys.executable, str(PROJECT / "train.py"), *args], cwd=root, env=env, text=True,
                          timeout=1200, **kwargs)


@pytest.mark.slow
def test_the_default_run_prints_at_most_40_lines_and_ends_with_what_to_run_next(tmp_path, data_dir):
    done = run_entry(f"paths.data_dir={data_dir}", root=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    assert lines[0].startswith(f"Training paths.data_dir={data_dir} on synthetic data: 2804 patches of 20 patients")
    assert "MLflow experiment idc, run http://127.0.0.1:5000/#/experiments/" in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == [f"{k}/10" for k in range(1, 11)]
    assert sum(line.startswith("Test: ") for line in lines) == 1 and not any("iba" in line for line in lines)
    assert lines[-4] == "Next:" and lines[-3].startswith(f"  mlflow ui --backend-store-uri sqlite:///{tmp_path}")
    assert "evaluate.py" in lines[-2] and "predict=" in lines[-1]
    for noise in ("GPU available", "TPU available", "v_num", "Total params", "Seed set", "name: idcnet", "Decoding"):
        assert noise not in done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.data.tags["mlflow.note.content"].startswith("val_auprc ")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert "test/classification_report.txt" in artifacts  # the full report, imbalanced-learn's table included
    assert "loss.alpha" not in run.data.params and "cv.val" not in run.data.params


@pytest.mark.slow
def test_verbose_shows_the_details(tmp_path, data_dir):
    done = run_entry(*TINY_DATA, *TINY_TRAINER, f"paths.data_dir={data_dir}", "verbose=true", root=tmp_path,
                     capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for shown in ("name: idcnet", "GPU available", "Total FLOPs", "iba", "Operating threshold"):
        assert shown in done.stdout, shown
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert "verbose" not in run.data.params and run.info.run_name != "verbose=true"  # a console setting


@pytest.mark.slow
def test_in_a_terminal_the_bar_counts_epochs_like_the_lines(tmp_path, data_dir):
    """Lightning's own bar says `Epoch 1/1` for a one-epoch run, like the epoch line, not `Epoch 0/0`."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns: tqdm draws
    trainer = [a for a in TINY_TRAINER if "max_epochs" not in a and "progress_bar" not in a]
    env = {**os.environ, "IDCLAB_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    process = subprocess.Popen([sys.executable, str(PROJECT / "train.py"), *TINY_DATA, *trainer,
                                "trainer.max_epochs=1", f"paths.data_dir={data_dir}"],
                               cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while chunk := read_or_end(leader):  # read as it comes: a full terminal buffer would stop the process
        output += chunk
    os.close(leader)
    process.wait(timeout=60)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert "Epoch 1/1" in text and "Epoch 0" not in text and "v_num" not in text
    assert not re.search(r"^epoch 1/1  ", text, re.MULTILINE)  # the bar keeps the epoch's line instead


def test_heatmaps_of_patients_that_are_not_tested_are_refused_before_the_run():
    from idclab.config.validation import ConfigError
    from idclab.evaluation.reporting import check_heatmap_patients, error_galleries

    check_heatmap_patients(3, ["8863"])  # a count: the test patients with the most patches
    check_heatmap_patients(["8863", 9036], ["8863", "9036", "10253"])
    with pytest.raises(ConfigError, match=r"report.heatmap_patients: nobody not among the 3 test patients "
                                          r"\(10253, 8863, 9036\)"):
        check_heatmap_patients(["8863", "nobody"], ["8863", "9036", "10253"])
    assert error_galleries(None, *[np.zeros(2)] * 3, threshold=0.5, size=0) == {}  # gallery_size=0: no pictures


def test_a_cross_validation_draws_heatmaps_of_any_patient_it_tests_and_refuses_the_others():
    """A cross-validation tests every pool patient out of fold (and the test split with its fold ensemble): a list
    naming a pool patient is drawn in that patient's fold; one naming nobody it has is refused, with or without a
    test split."""
    from idclab.config.validation import ConfigError
    from idclab.evaluation.reporting import check_heatmap_patients, tested_patients

    no_test = {"train": ["a", "b"], "val": ["c"], "test": []}
    check_heatmap_patients(["a", "c"], *tested_patients(no_test, cross_validated=True))
    with pytest.raises(ConfigError, match=r"nobody not among the 3 patients tested out of fold or on the test split "
                                          r"\(a, b, c\)"):
        check_heatmap_patients(["nobody"], *tested_patients(no_test, cross_validated=True))
    with_test = {"train": ["a"], "val": ["c"], "test": ["t"]}
    check_heatmap_patients(["a", "t"], *tested_patients(with_test, cross_validated=True))
    assert tested_patients(with_test, cross_validated=False) == (["t"], "test patients")
    with pytest.raises(ConfigError, match=r"a not among the 1 test patients \(t\)"):
        check_heatmap_patients(["a"], *tested_patients(with_test, cross_validated=False))


def test_a_heatmap_list_may_name_patients_as_numbers():
    """Hydra reads `report.heatmap_patients=[9036]` as an int; the check accepts it, so the heatmap must be drawn."""
    from types import SimpleNamespace

    from idclab.evaluation.reporting import heatmaps

    index = SimpleNamespace(patients=np.array(["9036", "9036", "8863"]), xs=np.array([1, 51, 1]),
                            ys=np.array([1, 1, 1]))
    datamodule = SimpleNamespace(data=SimpleNamespace(index=index, cache=SimpleNamespace(
        images=np.zeros((3, 50, 50, 3), dtype=np.uint8))))
    figures = heatmaps(datamodule, np.arange(3), np.array([1, 0, 0]), np.array([0.9, 0.2, 0.1]), 0.5, [9036])
    assert list(figures) == ["heatmaps/9036.png"]


def test_seeding_says_nothing_even_where_lightning_has_its_own_console_handler(make_cfg, monkeypatch):
    """Lightning gives its loggers their own console handler when it is imported before logging is configured (a
    sweep's parent run imports it), out of reach of the console's filter: the seed is in the params, not a line."""
    from idclab.training import pipeline

    calls = []
    monkeypatch.setattr(pipeline.pl, "seed_everything", lambda *args, **kwargs: calls.append(kwargs))
    pipeline.settled_config(make_cfg())
    assert calls == [{"workers": True, "verbose": False}]

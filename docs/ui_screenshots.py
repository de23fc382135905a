"""Screenshots of the MLflow UI for README, taken in a real headless browser (Debian's chromium) with a fresh
profile, as a newcomer sees the UI.

    IDCLAB_ROOT=/tmp/shots python train.py -m loss=focal,weighted   # the store: /tmp/shots/mlflow.db
    mlflow ui --backend-store-uri sqlite:////tmp/shots/mlflow.db --host 127.0.0.1 --port 5055 &
    pip install playwright   # the Python driver only: it drives /usr/bin/chromium (apt-get install chromium)
    python docs/ui_screenshots.py --store sqlite:////tmp/shots/mlflow.db --ui http://127.0.0.1:5055

Every page is opened in the UI's Model training view (`?workflowType=machine_learning`, what the links train.py
prints ask for). Writes docs/ui_sweep.png (the experiment's runs: the sweep's parent with its children, their
descriptions and headline metrics as columns), docs/ui_sweep_summary.png (the parent's overview: its description
holds the sweep's ranking and verdict), docs/ui_compare.png and docs/ui_compare_params.png (the compare view on
the option the sweep varied, then the parameters that differ), docs/ui_run.png (a child's overview: description,
datasets, params, tags), docs/ui_system.png (its system metrics) and docs/ui_artifacts.png (its artifacts, the test
confusion matrix open).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import quote

from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, sync_playwright

DOCS = Path(__file__).resolve().parent
SETTLE_MS = 5000  # the UI loads its tables and charts asynchronously
TRAINING = "workflowType=machine_learning"  # the UI's Model training view (a fresh browser opens on GenAI)
# the runs table's columns ticked or unticked (shown by default: Dataset, Source, Models): the descriptions and the
# headline metrics in view
COLUMNS = ("Dataset", "Source", "Models", "Description", "best_val_auprc", "test_balanced_accuracy", "test_auroc")


def latest_sweep(client: MlflowClient, experiment: str) -> tuple[str, object, list]:
    """The experiment id, its newest sweep parent run and that run's children."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`idclab.kind` = 'sweep'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return experiment_id, parent, children


def open_page(page: Page, url: str) -> None:
    page.goto("about:blank")  # a full load: a hash change alone can keep the previous run's artifact tree
    page.goto(url)
    page.wait_for_timeout(SETTLE_MS)
    close = page.get_by_role("button", name="Close")  # the assistant side panel hides half the table
    if close.count():
        close.first.click()
        page.wait_for_timeout(500)


def show_columns(page: Page, names: tuple[str, ...]) -> None:
    """Toggle `names` in the runs table's Columns menu (searched one at a time), then close the menu."""
    page.get_by_role("button", name="Columns").first.click()
    page.wait_for_timeout(1000)
    menu = page.locator("[data-component-id='mlflow.experiment_page.runs_table.column_selector']")
    for name in names:
        menu.get_by_placeholder("Search columns").fill(name)
        page.wait_for_timeout(500)
        menu.get_by_text(name, exact=True).first.click()
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)


def show_metric(page: Page, metric: str) -> None:
    """Plot `metric` against the `loss` option in the parallel-coordinates view, not what MLflow picked."""
    for name in ("system/cpu_utilization_percentage", "loss.alpha", "loss.gamma"):
        chip = page.get_by_text(name, exact=True)
        if chip.count():
            chip.first.locator("xpath=following-sibling::*[1]").click()
    metrics = page.get_by_text("Metrics:").locator("xpath=following::input[1]")
    metrics.click()
    metrics.fill(metric)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the tracking URI the sweep logged to")
    parser.add_argument("--ui", default="http://127.0.0.1:5055", help="where `mlflow ui` serves that store")
    parser.add_argument("--experiment", default="idc")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    experiment_id, parent, children = latest_sweep(MlflowClient(args.store), args.experiment)
    child = children[0].info.run_id
    runs = json.dumps([c.info.run_id for c in children])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        open_page(page, f"{args.ui}/#/experiments/{experiment_id}?{TRAINING}")  # opens on the runs table
        show_columns(page, COLUMNS)
        page.locator("button[data-component-id*=runnamecellrenderer]").first.click()  # expand the parent
        page.wait_for_timeout(1000)
        page.screenshot(path=DOCS / "ui_sweep.png")
        open_page(page, f"{args.ui}/#/experiments/{experiment_id}/runs/{parent.info.run_id}?{TRAINING}")
        page.screenshot(path=DOCS / "ui_sweep_summary.png")
        open_page(page, f"{args.ui}/#/compare-runs?runs={quote(runs)}&experiments={quote(json.dumps([experiment_id]))}"
                        f"&{TRAINING}")
        show_metric(page, "best_val_auprc")
        page.screenshot(path=DOCS / "ui_compare.png")
        page.get_by_text("Show diff only").first.click()  # the params that differ: the options the sweep varied
        page.get_by_text("Parameters", exact=True).last.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=DOCS / "ui_compare_params.png")
        open_page(page, f"{args.ui}/#/experiments/{experiment_id}/runs/{child}?{TRAINING}")
        page.screenshot(path=DOCS / "ui_run.png")
        open_page(page, f"{args.ui}/#/experiments/{experiment_id}/runs/{child}/system-metrics?{TRAINING}")
        page.screenshot(path=DOCS / "ui_system.png")
        open_page(page, f"{args.ui}/#/experiments/{experiment_id}/runs/{child}/artifacts?{TRAINING}")
        page.get_by_text("test", exact=True).first.click()
        page.wait_for_timeout(1000)
        page.get_by_text("confusion_matrix.png", exact=True).first.click()
        page.wait_for_timeout(2000)
        page.screenshot(path=DOCS / "ui_artifacts.png")
        browser.close()
    print(f"sweep {parent.info.run_name}: {len(children)} children; screenshots in {DOCS}")


if __name__ == "__main__":
    main()

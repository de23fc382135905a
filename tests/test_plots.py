"""Figures: nothing clipped, and the slide heatmap overlays P(IDC) on the tissue."""

from __future__ import annotations

import numpy as np
import pytest

from idclab.evaluation.plots import confusion_matrix_figure, slide_heatmap_figure


def inside_figure(fig) -> bool:
    """True when every axes' visible title, tick labels and axis labels are drawn inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = []
    for ax in fig.axes:
        texts.append(ax.title)
        if ax.axison:
            texts += [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.yaxis.label]
    texts = [t for t in texts if t.get_visible() and t.get_text()]
    return all(box.x0 <= (e := t.get_window_extent(renderer)).x0 and e.x1 <= box.x1 and box.y0 <= e.y0
               and e.y1 <= box.y1 for t in texts)


def test_confusion_matrix_labels_are_not_clipped():
    assert inside_figure(confusion_matrix_figure(120, 30, 20, 80, 0.53))


def slide(rng: np.random.Generator, count: int = 40):
    cols, rows = rng.integers(0, 8, count), rng.integers(0, 5, count)
    images = rng.integers(0, 256, (count, 50, 50, 3), dtype=np.uint8)
    return images, cols * 50 + 1, rows * 50 + 1, rng.random(count), rng.integers(0, 2, count)


@pytest.mark.parametrize("with_targets", [True, False])
def test_slide_heatmap_overlays_probabilities_on_the_tissue(with_targets):
    images, xs, ys, probs, targets = slide(np.random.default_rng(0))
    fig = slide_heatmap_figure(images, xs, ys, probs, targets if with_targets else None, 0.5, "patient 1")
    (overlay,) = [ax for ax in fig.axes if ax.get_title() == "P(IDC) over tissue"]
    tissue, heat = overlay.get_images()
    assert tissue.get_array().shape == (250, 400, 3)
    assert np.all((heat.get_alpha() > 0) & (heat.get_alpha() < 1))  # semi-transparent everywhere
    assert heat.get_extent() == [0, 400, 250, 0]  # one heat cell per 50 x 50 patch, on the tissue
    assert inside_figure(fig)

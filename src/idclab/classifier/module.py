"""The LightningModule joining a backbone, a loss and the metrics. It knows nothing of files."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from idclab.classifier.mixup import draw_mixup, mixed_loss
from idclab.classifier.predictor import ContextRule
from idclab.classifier.schedules import make_scheduler, scheduled
from idclab.data.neighbourhood import input_channels, views_of
from idclab.models.stain import NoStain, StainNormaliser
from idclab.scoring.context import neighbour_matrix, smooth
from idclab.scoring.metrics import BinaryMetrics, binary_metrics

STAGES = ("train", "val", "test")
FINITE_CHECK_STEPS = 50  # on an accelerator, training losses are checked for NaN/inf this often (a device sync)
PROGRESS_BAR_METRICS = ("val_loss", "val_auprc", "val_f1", "val_balanced_accuracy")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class IDCClassifier(ContextRule, pl.LightningModule):
    """Binary IDC classifier on uint8 patches; normalisation happens here, on the model's device.

    `config` (the resolved run config as a plain dict), `mean`, `std`, `threshold` and
    `class_counts` are saved in every checkpoint so the model can be rebuilt and used alone, with
    `split_patients` (the patient ids of each split) and `data_fingerprint` (cache key, content digest,
    patches per split) recording the data it was fitted on. Batches are (images, targets, index rows);
    validation and test count each patch once (by row) even when a distributed sampler repeats some. After
    `trainer.test`, `test_probs`, `test_targets` and `test_rows` hold the test predictions in row order.

    With spatial context (`context_weight` > 0, tuned on validation), test probabilities are blended with
    their slide neighbours' (see `idclab.scoring.context`); `positions` (patient, x, y per index row) must then be set
    before testing. `test_patch_probs` always keeps the test probabilities of the patches alone. `patch_threshold` is
    the threshold tuned without context, for patches scored one at a time (no neighbours known).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, config: dict[str, Any],
                 mean: list[float], std: list[float], class_counts: list[int], threshold: float = 0.5,
                 lr: float = 1e-3, weight_decay: float = 0.0, stain: StainNormaliser | None = None,
                 split_patients: dict[str, list[str]] | None = None, data_fingerprint: dict[str, Any] | None = None,
                 context_weight: float = 0.0, context_radius: int = 1, patch_threshold: float | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "criterion", "stain"])
        self.model = model
        self.criterion = criterion
        self.stain = stain if stain is not None else NoStain()  # fitted target: in the state dict
        self.threshold = threshold
        self.context_weight, self.context_radius, self.patch_threshold = context_weight, context_radius, patch_threshold
        self.positions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # patient, x, y of each index row
        self.tta = False
        self.mixup_alpha = float((config.get("mixup") or {}).get("alpha", 0.0))  # > 0: training batches are blended
        self.finite_check_steps = FINITE_CHECK_STEPS
        self._all_finite: torch.Tensor | None = None  # on the device: were the losses since the last check finite?
        self.input_views = views_of(config)  # non-empty: patches come with neighbourhood views (3 channels each)
        self.example_input_array = torch.zeros(1, input_channels(self.input_views), 50, 50, dtype=torch.uint8)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.metrics = nn.ModuleDict({f"{stage}_metrics": BinaryMetrics(threshold, unique_rows=stage != "train")
                                      for stage in STAGES})
        self.test_probs = torch.empty(0)
        self.test_targets = torch.empty(0, dtype=torch.long)
        self.test_rows = torch.empty(0, dtype=torch.long)
        self.test_patch_probs = torch.empty(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of uint8 N x C x H x W images."""
        return self.model(self.standardised(images))

    def standardised(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for uint8 images (channels_last on CUDA, where it is faster); with neighbourhood
        views (C = 6, 9, ...), each 3-channel view is stain-normalised and standardised alike."""
        views = images.float().div_(255.0).split(3, dim=1)
        x = torch.cat([self.stain(view).sub_(self.mean).div_(self.std) for view in views], dim=1)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def setup(self, stage: str) -> None:
        """On CUDA, the weights go channels_last here, before the strategy moves the model and DDP wraps it (DDP's
        gradient buckets take the parameters' strides as they are when it wraps)."""
        if self.trainer.strategy.root_device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """P(IDC) per image; with `tta`, averaged over the 8 flips/rotations of each patch."""
        if not self.tta:
            return torch.sigmoid(self(images).float())
        views = [torch.rot90(v, k, dims=(-2, -1)) for v in (images, images.flip(-1)) for k in range(4)]
        return torch.stack([torch.sigmoid(self(v).float()) for v in views]).mean(0)

    def set_context(self, weight: float, radius: int, patch_threshold: float) -> None:
        """Blend test probabilities with their neighbours' (`weight`, `radius` in patches) from now on;
        `patch_threshold` is the threshold for patches without known neighbours."""
        self.context_weight, self.context_radius = float(weight), int(radius)
        self.patch_threshold = float(patch_threshold)
        self.hparams.update(context_weight=self.context_weight, context_radius=self.context_radius,
                            patch_threshold=self.patch_threshold)

    def in_context(self, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`probs` of index `rows` blended with those of their neighbours among the same rows."""
        if self.positions is None:
            raise RuntimeError("this model uses spatial context: set `positions` (patient, x, y per row) first")
        patients, xs, ys = (np.asarray(p)[rows] for p in self.positions)
        return self.blend(probs, patients, xs, ys)

    def blend(self, probs: np.ndarray, patients: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """`probs` blended with those of their neighbours among them (patient, x, y in pixels per patch)."""
        return smooth(probs, neighbour_matrix(patients, xs, ys, self.context_radius), self.context_weight)

    def set_threshold(self, threshold: float) -> None:
        """Use `threshold` on P(IDC) for labels and threshold-based metrics from now on."""
        self.threshold = float(threshold)
        self.hparams["threshold"] = float(threshold)
        for metrics in self.metrics.values():
            metrics.threshold = float(threshold)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor | None:
        images, targets, rows = batch
        mix = draw_mixup(self.mixup_alpha, len(targets), images.device) if stage == "train" else None
        logits = self(images) if mix is None else self.model(mix.blend(self.standardised(images)))
        probs = self.probabilities(images) if stage == "test" and self.tta else torch.sigmoid(logits.detach().float())
        if stage != "train":  # the loss, like the metrics, is computed once per patch at the epoch's end
            self.metrics[f"{stage}_metrics"].update(probs, targets, rows, logits.detach())
            return None
        loss = (self.criterion(logits.float(), targets.float()) if mix is None
                else mixed_loss(self.criterion, logits.float(), targets.float(), mix))
        self.check_loss(loss)
        self.metrics["train_metrics"].update(probs, targets, rows)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets),
                 sync_dist=True)
        return loss

    def check_loss(self, loss: torch.Tensor) -> None:
        """NonFiniteLossError once a training loss is NaN or infinite. Reading the flag waits for the device, so on
        an accelerator the losses' flags are gathered on it and read every `finite_check_steps` steps (and at the
        epoch's end): a step per check on the CPU, where reading costs nothing."""
        finite = torch.isfinite(loss.detach())
        self._all_finite = finite if self._all_finite is None else self._all_finite & finite
        if loss.device.type == "cpu" or (self.global_step + 1) % self.finite_check_steps == 0:
            self.raise_if_not_finite(f"{loss.item()} at" if loss.device.type == "cpu" else "NaN or infinite by")

    def raise_if_not_finite(self, what: str = "NaN or infinite by") -> None:
        """NonFiniteLossError if a loss since the last check was not finite; then start a new check."""
        all_finite, self._all_finite = self._all_finite, None
        if all_finite is not None and not bool(all_finite):
            raise NonFiniteLossError(
                f"training loss is {what} epoch {self.current_epoch}, step {self.global_step}: "
                "lower optim.lr, check the data, or use trainer.precision=32-true")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """P(IDC) of a batch with its index rows (to match predictions to patches by row)."""
        images, _, rows = batch
        return self.probabilities(images), rows

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.metrics[f"{stage}_metrics"]
        epoch = metrics.gathered()
        if stage == "test":
            self.test_patch_probs = epoch.probs.cpu()
        if stage == "test" and self.uses_context:
            smoothed = self.in_context(epoch.probs.cpu().numpy(), epoch.rows.cpu().numpy())
            epoch = epoch._replace(probs=torch.from_numpy(smoothed).to(epoch.probs))
        values = {f"{stage}_{name}": value
                  for name, value in binary_metrics(epoch.probs, epoch.targets, metrics.threshold).items()}
        if epoch.logits is not None:
            values[f"{stage}_loss"] = float(self.criterion(epoch.logits, epoch.targets.float()))
        if stage == "test":  # kept for the report and figures
            self.test_probs, self.test_targets, self.test_rows = (t.cpu() for t in epoch[:3])
        shown = {key: values.pop(key) for key in PROGRESS_BAR_METRICS if key in values}
        self.log_dict(values, sync_dist=True)
        self.log_dict(shown, prog_bar=True, sync_dist=True)
        metrics.reset()

    def on_validation_start(self) -> None:
        self.raise_if_not_finite()  # before validation and checkpointing see weights a NaN loss has spoilt

    def on_train_epoch_end(self) -> None:
        self.raise_if_not_finite()
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trained parameters (frozen ones left out); a backbone with an encoder/head split (`encoder_parameters`)
        trains its encoder at `encoder_lr_scale` times optim.lr."""
        if not hasattr(self.model, "encoder_parameters"):
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        encoder = [p for p in self.model.encoder_parameters() if p.requires_grad]
        known = {id(p) for p in encoder}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in known]
        scaled = {"params": encoder, "lr": self.hparams.lr * self.model.encoder_lr_scale}
        return [{"params": rest}, *([scaled] if encoder else [])]

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        optim = self.hparams.config.get("optim", {})
        if not scheduled(optim):
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = make_scheduler(optimizer, optim, self.trainer.max_epochs, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

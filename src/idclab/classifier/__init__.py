"""The trainable classifier: the LightningModule joining a backbone, a loss and the metrics, its
training-step tools (mixup, schedules, weight averaging) and seed/fold ensembles. No MLflow, no Hydra."""

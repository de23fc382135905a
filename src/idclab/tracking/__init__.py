"""Everything that talks to MLflow: runs, the sweep's parent run, comparisons, study verdicts, the logged
model and the model registry."""

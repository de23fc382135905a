"""Pure scoring of predictions: metrics and patient-bootstrap intervals, threshold rules, spatial context.
No Lightning, no MLflow, no files."""

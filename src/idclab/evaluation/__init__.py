"""The evaluate stage: tests and reports, figures, prediction on files, out-of-fold reports."""

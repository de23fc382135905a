"""The train stage: the conductor `train(cfg)`, the fit stage's settings (`plan`), fit strategies (one model, a
seed ensemble, k folds), the Lightning trainer and its callbacks, resuming."""

"""The train stage: the conductor `train(cfg)`, fit strategies (one model, a seed ensemble, k folds),
the Lightning trainer and its callbacks, resuming."""

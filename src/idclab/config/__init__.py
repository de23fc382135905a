"""Configuration: the closed registry of options, config validation, and building a classifier from a
config or a checkpoint (a file is data: nothing it names is called)."""

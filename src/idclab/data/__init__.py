"""The data layer: Kaggle layout scan, synthetic generator, decoding, packed cache, splits, loading."""

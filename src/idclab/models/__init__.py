"""Backbones: plain nn.Modules mapping a normalised N x 3 x 50 x 50 batch to N logits."""

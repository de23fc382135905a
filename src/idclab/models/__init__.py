"""Backbones: plain nn.Modules mapping a normalised N x C x 50 x 50 batch to N logits (C = `in_channels`: 3, or 6
with the neighbourhood view, see `idclab.data.neighbourhood`)."""

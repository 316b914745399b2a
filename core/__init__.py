"""Poison Lab core: data, softmax and LGM models, training, checkpoints (no UI code here)."""

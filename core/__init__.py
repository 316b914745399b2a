"""Poison Lab core: data, softmax and LGM models, training, attacks, victims, defences,
experiments and embeddings. No UI code: the dashboard and the CLI both call this package."""

"""Recommendation models. Each module: a typed config, ``train()``, and a :class:`Scorer`."""

"""Using a trained classifier: the :class:`Predictor` API and test-time augmentation."""

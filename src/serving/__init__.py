"""Serving a trained model over HTTP (``python -m src.serve``): LitServe's API, upload checks, the page."""

"""Serve a trained model: ``python -m src.serve ckpt_path=RUN/checkpoints/best.ckpt [port=8000] [host=127.0.0.1]``.

An HTTP server built on LitServe (FastAPI and uvicorn underneath) with one inference worker per
device and dynamic batching (``max_batch_size`` requests, waiting at most ``batch_timeout`` s):

- ``POST /predict``: one image as raw bytes (``Content-Type: image/...``) or one or several
  multipart files; JSON back with each image's class, probability and top-k classes (every class
  above the threshold for a multi-label model), the model and which forward pass served it.
  ``?topk=K`` and ``?cam=true`` (a Grad-CAM map of the top class; torch backend) are optional;
  ``?inside=true[&kernel=K]`` adds the "Inside the model" view of the one image sent (torch backend).
- ``GET /``: a page to try the model in a browser; ``GET /info``: the model and its classes;
  ``GET /health``; ``GET /docs``: the OpenAPI page.

It listens on 127.0.0.1 (this machine only) unless ``host=0.0.0.0`` is asked for. Bad uploads get
a 4xx JSON ``{"detail": ...}`` (:mod:`src.serving.uploads`). ``backend=onnx`` serves the model
exported to ONNX in onnxruntime. The server is built in :mod:`src.serving.server`, which
``python -m src.inspect serve=true`` uses too. See docs/serving.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.core.user_errors import one_line_user_errors
from src.optim.fine_tune import register_resolvers
from src.serving.served_model import ServedModel
from src.serving.server import run_server

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config


def serve(cfg: DictConfig) -> None:
    """Serve the checkpoint ``cfg.ckpt_path`` until interrupted (Ctrl+C or SIGTERM)."""
    run_server(cfg, ServedModel.from_checkpoint(cfg.ckpt_path))


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()

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
exported to ONNX in onnxruntime. See docs/serving.md.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import hydra
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.core.hardware import inference_precision, resolve_device
from src.models.loading import check_checkpoint_path, read_checkpoint
from src.models.multi_label_metrics import DEFAULT_THRESHOLD
from src.models.network import build_network
from src.visualize.walkthrough import first_conv
from src.optim.fine_tune import register_resolvers
from src.core.extras import require_extra
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config

if TYPE_CHECKING:  # the serve extra, imported by build_server once it is known to be installed
    import litserve

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "serving" / "page"
API_PATH = "/predict"


def _add_page(app) -> None:
    """``GET /`` is the page (LitServe's own ``/`` answers "litserve running"); its files under /page/."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/"]
    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")

    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)


def _document_predict(app) -> None:
    """What ``POST /predict`` takes, for the OpenAPI page (the route reads the raw request, so FastAPI cannot see it)."""
    from src.serving.uploads import RAW_TYPES

    binary = {"schema": {"type": "string", "format": "binary"}}
    for route in app.router.routes:
        if getattr(route, "path", None) == API_PATH:
            route.summary = "Classify one or several images"
            route.description = ("One image as the raw body (Content-Type image/jpeg, image/png ... or "
                                 "application/octet-stream), or multipart/form-data files (any field name).")
            route.openapi_extra = {
                "parameters": [
                    {"name": "topk", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
                     "description": "classes per image in the answer (default: the server's topk)"},
                    {"name": "cam", "in": "query", "required": False, "schema": {"type": "boolean"},
                     "description": "add a Grad-CAM map (PNG data URL) of the top class (torch backend)"},
                    {"name": "inside", "in": "query", "required": False, "schema": {"type": "boolean"},
                     "description": "add the 'Inside the model' view of the one image sent (torch backend; "
                                    "docs/inspect.md)"},
                    {"name": "kernel", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                     "description": "with inside=true: the first-layer kernel to follow (default: the most active)"},
                ],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
                    **{f"{kind}*" if kind.endswith("/") else kind: binary for kind in RAW_TYPES},
                }},
            }


def first_layer_kernels(model_config: DictConfig, num_classes: int) -> int | None:
    """How many kernels the network's first convolution has (``?kernel=`` is checked against it before the
    worker sees the request), read from the network built on the meta device: no memory, no weights."""
    with torch.device("meta"):
        found = first_conv(build_network(model_config, num_classes=num_classes).backbone)
    return None if found is None else found[1].out_channels


def build_server(cfg: DictConfig) -> litserve.LitServer:
    """The LitServer for ``cfg`` (see conf/serve.yaml), not yet running; raises on a bad setting."""
    # LitServe, FastAPI and Starlette come with the serve extra: imported once it is known to be there.
    require_extra("serve", "python -m src.serve")
    import litserve as ls

    from src.serving.api import ClassifierAPI
    from src.serving.uploads import UploadGuard, UploadLimits

    ckpt_path = check_checkpoint_path(cfg.ckpt_path)
    limits = UploadLimits(cfg.max_upload_mb, cfg.max_files, cfg.max_image_pixels, cfg.upload_timeout_s)
    problems = limits.problems()
    if not isinstance(cfg.topk, int) or cfg.topk < 1:
        problems.append(f"topk={cfg.topk!r}; expected an integer >= 1 (it is capped at the model's class count)")
    if problems:
        raise ValueError("conf/serve.yaml: " + "; ".join(problems))
    hparams = read_checkpoint(ckpt_path, mmap=True)["hyper_parameters"]
    run = OmegaConf.create(hparams["run_config"])
    classes = list(hparams["classes"])
    backend_class = get_class(cfg.backend._target_)
    backend = backend_class.prepare(cfg.backend, str(ckpt_path), Path(cfg.paths.output_dir))
    precision = getattr(backend_class, "precision", None) or inference_precision(
        run.trainer.get("precision"), cfg.backend.get("precision"), resolve_device(cfg.accelerator))
    model = {"name": run.model.backbone.name, "checkpoint": str(ckpt_path), "backend": backend_class.name,
             "precision": precision}
    multi_label = bool(hparams.get("multi_label", False))
    inside = getattr(backend_class, "inside_available", False)
    info = {**model, "classes": classes, "multi_label": multi_label, "topk": min(cfg.topk, len(classes)),
            "threshold": float(hparams.get("threshold", DEFAULT_THRESHOLD)) if multi_label else None,
            "size": run.data.size, "cam": backend_class.cam_available, "inside": inside, "max_upload_mb": cfg.max_upload_mb,
            "max_files": cfg.max_files, "max_batch_size": cfg.max_batch_size, "batch_timeout": cfg.batch_timeout}
    api = ClassifierAPI(OmegaConf.to_container(backend, resolve=True), str(ckpt_path), model, info["topk"],
                        max_batch_size=cfg.max_batch_size, batch_timeout=cfg.batch_timeout, api_path=API_PATH)
    server = ls.LitServer(
        api, accelerator=cfg.accelerator, devices=cfg.devices, workers_per_device=1, timeout=cfg.timeout_s,
        model_metadata=info,
        middlewares=[(UploadGuard, {"path": API_PATH, "limits": limits, "classes": len(classes),
                                    "min_size": run.data.size, "inside": inside,
                                    "kernels": first_layer_kernels(run.model, len(classes)) if inside else None})],
    )
    _add_page(server.app)
    _document_predict(server.app)
    return server


def _sigterm_handler(server_pid: int) -> Callable[[int, FrameType | None], None]:
    """SIGTERM (docker stop, kill, systemd) as Ctrl+C in the server's own process: LitServe shuts its
    workers down on KeyboardInterrupt only.

    LitServe forks its HTTP and inference processes, and they inherit this handler. Each is stopped with
    SIGTERM, and uvicorn raises the signal again after its clean shutdown: a KeyboardInterrupt there
    printed each child's traceback (~30 lines). A child ends as SIGTERM ends a process instead, quietly.
    """
    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != server_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    return stop


class ManagerGoneAtShutdown(logging.Filter):
    """Drops LitServe's "Monitoring worker crashed" traceback when its cause is the multiprocessing manager
    being gone: on Ctrl+C or SIGTERM LitServe shuts its manager down while its monitoring thread still polls
    the manager's shutdown event (set only on the other ways it stops), and that poll then fails with a
    connection error. The server is stopping as asked; any other error of the monitor is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Monitoring worker crashed"
                    and isinstance(error, (ConnectionError, EOFError)))


def serve(cfg: DictConfig) -> None:
    """Build the server and run it until interrupted (Ctrl+C or SIGTERM)."""
    server = build_server(cfg)
    logging.getLogger("litserve.server").addFilter(ManagerGoneAtShutdown())
    signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    log.info("serving %s on http://%s:%d/ (the page), POST %s, docs at /docs", cfg.ckpt_path, cfg.host, cfg.port,
             API_PATH)
    server.run(host=cfg.host, port=cfg.port, generate_client_file=False, log_level=cfg.log_level)


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()

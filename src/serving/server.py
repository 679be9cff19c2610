"""The HTTP server of a served model, built and run the same way by every command that serves one.

``python -m src.serve`` serves a checkpoint; ``python -m src.inspect serve=true`` serves the network it
inspects (before training, or a checkpoint). Both call :func:`build_server` with conf/serve.yaml's
settings and a :class:`~src.serving.served_model.ServedModel`, then :func:`run_server`. The server is
LitServe's (FastAPI and uvicorn underneath), with one inference worker per device, dynamic batching,
the upload checks of :mod:`src.serving.uploads` and the page of ``page/``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.core.extras import require_extra
from src.core.hardware import inference_precision, resolve_device
from src.models.network import build_network
from src.serving.served_model import ServedModel
from src.visualize.walkthrough import first_conv

if TYPE_CHECKING:  # the serve extra, imported by build_server once it is known to be installed
    import litserve

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "page"
API_PATH = "/predict"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# The server settings of a command other than src.serve: conf/serve.yaml's, with the torch backend (the
# "Inside the model" view needs it).
SERVE_CONFIG = CONF_DIR / "serve.yaml"
TORCH_BACKEND = CONF_DIR / "backend" / "torch.yaml"


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


def serve_settings(paths: DictConfig, **chosen) -> DictConfig:
    """conf/serve.yaml's server settings (limits, batching, timeouts) and the torch backend, for a command
    other than ``src.serve``; ``chosen`` (host, port, ``backend.precision`` ...) replace theirs."""
    settings = OmegaConf.load(SERVE_CONFIG)
    for key in ("defaults", "ckpt_path", "task_name"):  # src.serve's own: its groups, checkpoint, run folders
        del settings[key]
    settings.backend = OmegaConf.load(TORCH_BACKEND)
    settings.paths = paths
    for key, value in chosen.items():  # dotted keys: backend.precision
        OmegaConf.update(settings, key, value, merge=False)
    return settings


def build_server(cfg: DictConfig, served: ServedModel, command: str = "python -m src.serve") -> litserve.LitServer:
    """The LitServer of ``served`` with the settings ``cfg`` (see conf/serve.yaml), not yet running; raises on a
    bad setting. ``command`` names what asked for it in the message of a missing serve extra."""
    # LitServe, FastAPI and Starlette come with the serve extra: imported once it is known to be there.
    require_extra("serve", command)
    import litserve as ls

    from src.serving.api import ClassifierAPI
    from src.serving.uploads import UploadGuard, UploadLimits

    limits = UploadLimits(cfg.max_upload_mb, cfg.max_files, cfg.max_image_pixels, cfg.upload_timeout_s)
    problems = limits.problems()
    if not isinstance(cfg.topk, int) or cfg.topk < 1:
        problems.append(f"topk={cfg.topk!r}; expected an integer >= 1 (it is capped at the model's class count)")
    if problems:
        raise ValueError("conf/serve.yaml: " + "; ".join(problems))
    run, classes = served.config, served.classes
    backend_class = get_class(cfg.backend._target_)
    backend = backend_class.prepare(cfg.backend, served, Path(cfg.paths.output_dir))
    precision = getattr(backend_class, "precision", None) or inference_precision(
        served.trained_precision, cfg.backend.get("precision"), resolve_device(cfg.accelerator))
    checkpoint = None if served.checkpoint is None else str(served.checkpoint)
    model = {"name": served.name, "checkpoint": checkpoint, "backend": backend_class.name, "precision": precision}
    inside = getattr(backend_class, "inside_available", False)
    info = {**model, "classes": classes, "multi_label": served.multi_label, "topk": min(cfg.topk, len(classes)),
            "threshold": served.threshold if served.multi_label else None,
            "size": run.data.size, "cam": backend_class.cam_available, "inside": inside, "max_upload_mb": cfg.max_upload_mb,
            "max_files": cfg.max_files, "max_batch_size": cfg.max_batch_size, "batch_timeout": cfg.batch_timeout}
    api = ClassifierAPI(OmegaConf.to_container(backend, resolve=True), served, model, info["topk"],
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


def run_server(cfg: DictConfig, served: ServedModel, command: str = "python -m src.serve") -> None:
    """Build the server of ``served`` and run it until interrupted (Ctrl+C or SIGTERM)."""
    server = build_server(cfg, served, command)
    logging.getLogger("litserve.server").addFilter(ManagerGoneAtShutdown())
    signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    log.info("serving %s on http://%s:%d/ (the page), POST %s, docs at /docs", served.describe(), cfg.host, cfg.port,
             API_PATH)
    server.run(host=cfg.host, port=cfg.port, generate_client_file=False, log_level=cfg.log_level)

"""Exporting a checkpoint for serving (``python -m src.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx|torch_export``).

The exported model takes uint8 RGB images (N, 3, H, W), resizes them (bilinear, both sides) to
the training size, normalises them as in training and returns class probabilities (N, classes):
softmax, or for a multi-label model an independent sigmoid per class (every class above the
``threshold`` in ``classes.json`` is predicted).
Feed images at the training size for the same numbers as ``src.predict``: the resize is then a
no-op, whereas on other sizes the training transform's crop and antialiasing are not copied.
Batch size, height and width are dynamic in both formats. ``classes.json`` next to it names the
classes in output order.

- ``onnx``: ``model.onnx`` for onnxruntime and other ONNX runtimes: one self-contained file. A model
  whose weights pass ONNX's 2 GB protobuf limit is written as a pair, ``model.onnx`` and its weights
  ``model.onnx.data``, which must stay side by side.
- ``torch_export``: ``model.pt2``, a ``torch.export`` ExportedProgram: the graph and weights, so
  ``torch.export.load("model.pt2").module()`` runs it with torch alone, without this project.
- ``body``: ``body.pth``, the body's plain state_dict (no head), named as its library names it, for
  other tools: it loads strictly into ``torchvision.models.<name>()`` with ``fc = nn.Identity()``, or
  into ``timm.create_model("<name>", num_classes=0)``; ``model.backbone.weights=body.pth`` takes it too.

TorchScript is not offered: ``torch.jit.trace`` is deprecated (a FutureWarning naming
``torch.export`` as its replacement).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from src.inference.probabilities import class_probabilities
from src.models.loading import load_classifier
from src.models.multi_label_metrics import DEFAULT_THRESHOLD
from src.core.atomic_write import atomic_write_json
from src.core.extras import require_extra

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2", "body": "body.pth"}
# Both exporters trace the same graph; these ranges bound the sizes it is valid for.
MAX_BATCH = 4096
MIN_SIDE, MAX_SIDE = 8, 8192
# A protobuf message is at most 2 GiB; past this much weight (leaving room for the graph) the ONNX
# weights go to an external ``model.onnx.data`` file.
MAX_EMBEDDED_ONNX_WEIGHT_BYTES = int(1.8 * 2**30)


class ServingModel(nn.Module):
    """uint8 RGB images (N, 3, H, W) in, class probabilities (N, classes) out."""

    def __init__(
        self,
        net: nn.Module,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        multi_label: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__()
        self.net = net.eval()
        self.size = size
        self.multi_label = multi_label
        self.threshold = threshold  # multi-label: not applied here, written to classes.json for the caller
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        return class_probabilities(self.net((x - self.mean) / self.std), self.multi_label)


def serving_model(ckpt_path: str | Path) -> tuple[ServingModel, list[str], int]:
    loaded = load_classifier(ckpt_path)
    data = loaded.config.data
    return ServingModel(loaded.net, data.size, data.mean, data.std, loaded.multi_label, loaded.threshold).eval(), loaded.classes, data.size


def dynamic_image_shapes() -> dict[int, torch.export.Dim]:
    """Batch size, height and width of the ``images`` input left free in the exported graph."""
    return {0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
            2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}


def weight_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s parameters and buffers (what an exported file stores)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """``model`` as ``path``: one self-contained file when its weights fit in a protobuf, else with
    ``path.data`` beside it (and a warning, since copying the ``.onnx`` alone then breaks it)."""
    external = weight_bytes(model) > MAX_EMBEDDED_ONNX_WEIGHT_BYTES
    torch.onnx.export(
        model, (example,), str(path), dynamo=True, opset_version=opset, external_data=external,
        input_names=["images"], output_names=["probabilities"],
        dynamic_shapes={"images": dynamic_image_shapes()},
    )
    data = path.with_name(path.name + ".data")
    if external:
        log.warning("the weights pass ONNX's 2 GB limit: they are in %s, which must stay beside %s", data, path)
    else:
        data.unlink(missing_ok=True)  # an earlier export's weights, which this model.onnx does not read


def export_body(ckpt_path: str | Path, path: Path) -> dict[str, Any]:
    """Write the body of checkpoint ``ckpt_path`` as a plain state_dict at ``path`` (see the module doc)."""
    loaded = load_classifier(ckpt_path)
    body = loaded.net.backbone
    torch.save(body.source_state_dict(), path)
    log.info("wrote the %s body of %s to %s", body.name, ckpt_path, path)
    return {"model": str(path), "backbone": body.name}


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the serving model of ``cfg.ckpt_path`` in ``cfg.format`` and ``classes.json``; return their paths."""
    if cfg.format == "torchscript":
        raise ValueError("format=torchscript is no longer offered: torch deprecates torch.jit.trace; use "
                         "format=torch_export (model.pt2, loads with torch.export.load) or format=onnx")
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; choose one of {', '.join(FORMATS)}")
    if cfg.format == "onnx":  # torch.onnx's exporter imports onnx and onnxscript; checked before the checkpoint is read
        require_extra("export", "format=onnx")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.format == "body":
        return export_body(cfg.ckpt_path, output_dir / FORMATS["body"])
    model, classes, size = serving_model(cfg.ckpt_path)
    multi_label = model.multi_label
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    path = output_dir / FORMATS[cfg.format]
    if cfg.format == "onnx":
        export_onnx(model, example, path, cfg.opset)
    else:
        program = torch.export.export(model, (example,), dynamic_shapes={"images": dynamic_image_shapes()})
        torch.export.save(program, str(path))
    atomic_write_json(output_dir / "classes.json", {
        "classes": classes,
        "input": f"uint8 RGB (N, 3, H, W), best at H = W = {size}",
        "output": f"probabilities (N, {len(classes)}) in the order of classes"
                  + (": independent sigmoids (multi-label), predict every class above threshold" if multi_label
                     else " (softmax)"),
        "size": size,
        "multi_label": multi_label,
        **({"threshold": model.threshold} if multi_label else {}),
    })
    log.info("exported %s to %s", cfg.ckpt_path, path)
    return {"model": str(path), "classes": str(output_dir / "classes.json"), "size": size}

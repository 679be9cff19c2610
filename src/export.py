"""Export a checkpoint for serving (:mod:`src.inference.exporting`): ``python -m src.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx|torch_export``.

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

import hydra
from omegaconf import DictConfig

from src.inference.exporting import export
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    paths = export(cfg)
    print(f"model: {paths['model']}")
    if "classes" in paths:
        print(f"classes: {paths['classes']}")


if __name__ == "__main__":
    main()

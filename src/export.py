"""Export a checkpoint for serving: ``python -m src.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx|torch_export|body``.

The formats, what the exported model takes and returns, and why there is no TorchScript:
:mod:`src.inference.exporting`, which does the work.
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

"""fastai's learning-rate finder: ``python -m src.lr_find experiment=demo [stage=1]``.

Builds the data and model as ``src.train`` does, freezes them as in the chosen stage, runs the range test,
writes ``lr_find.png`` (also to TensorBoard) and prints the suggestions (:mod:`src.runs.lr_finding`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.runs.lr_finding import lr_find
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    suggestions = lr_find(cfg, cfg.stage)
    # The command's result: the suggestions and where the plot is.
    for name, value in suggestions.items():
        print(f"{name}: {value:.2e}")
    print(f"plot: {Path(cfg.paths.output_dir) / 'lr_find.png'}")


if __name__ == "__main__":
    main()

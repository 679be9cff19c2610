"""``python -m src.bench [bench=resnet18_64|resnet50_224] [any training override]`` (``make bench``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.bench.run import run_bench
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    run_bench(cfg)


if __name__ == "__main__":
    main()

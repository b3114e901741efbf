"""Train a model: `python train.py` (tiny LION-S ViT on MNIST-5k, CPU, a few minutes) or
`python train.py experiment=<name> [key=value ...]`. See configs/train.yaml and README.md."""
import sys

import hydra
from omegaconf import DictConfig

import lion.utils  # noqa: F401  (registers the config resolvers)
from lion.utils.checks import ConfigError


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lion.pipeline import train  # heavy imports after Hydra has parsed the command line

    try:
        payload = train(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    value = payload["metrics"].get(cfg.get("optimized_metric") or "val/acc")
    return value  # the objective of a hyper-parameter sweep


if __name__ == "__main__":
    main()

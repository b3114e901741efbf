"""Train a model: `python train.py` (tiny LION-S ViT on MNIST-5k, CPU, a few minutes) or
`python train.py experiment=<name> [key=value ...]`. See configs/train.yaml and README.md."""
import hydra
from omegaconf import DictConfig

import lion.run  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lion.pipeline import train
    from lion.run.checks import run_or_exit

    payload = run_or_exit(train, cfg)
    return payload["metrics"].get(cfg.get("optimized_metric") or "val/acc")  # the objective of a sweep


if __name__ == "__main__":
    main()

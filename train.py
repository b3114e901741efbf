"""Train a model: `python train.py` (tiny LION-S ViT on MNIST-5k, CPU, a few minutes) or
`python train.py experiment=<name> [key=value ...]`. See configs/train.yaml and README.md."""
import os

# before torch is imported (importing lion imports it): waiting OpenMP threads sleep instead of spinning on shared
# cores (lion.run.threads explains the thread policy)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import lion.run  # noqa: F401,E402  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lion.pipeline import train
    from lion.run.checks import run_or_exit

    payload = run_or_exit(train, cfg)
    return payload["metrics"].get(cfg.get("optimized_metric") or "val/acc")  # the objective of a sweep


if __name__ == "__main__":
    main()

"""Evaluate a checkpoint in any attention form:
`python eval.py ckpt_path=logs/runs/<run_id>/checkpoints/best.ckpt model.form=recurrent [model.chunk_size=16]
[split=val]`. Writes <run_dir>/eval/<split>-<form>-c<chunk>.json (or `output=...`). See configs/eval.yaml."""
import hydra
from omegaconf import DictConfig

import lion.run  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from lion.pipeline import evaluate
    from lion.run.checks import run_or_exit

    run_or_exit(evaluate, cfg)


if __name__ == "__main__":
    main()

"""Compose the project's configs from Python (notebooks, tests), exactly as train.py / eval.py would:

    from lion.run.config import compose
    cfg = compose("train", ["experiment=hamlet_mlm", "trainer.max_epochs=1"])
    from lion.pipeline import train
    train(cfg)
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

import lion.run.rundir  # noqa: F401  (resolvers)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = (),
            config_dir: str | Path | None = None) -> DictConfig:
    """The composed config without the `hydra` node (paths resolve without a Hydra run)."""
    with initialize_config_dir(config_dir=str(Path(config_dir or CONFIG_DIR).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def group_options(group: str, config_dir: str | Path | None = None) -> list[str]:
    """Every option of a config group, nested ones as 'sub/name' (e.g. 'vit/lion_s_tiny', 'paper/...')."""
    root = Path(config_dir or CONFIG_DIR) / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolved(cfg: DictConfig) -> dict:
    """Plain, fully resolved container (raises on any bad interpolation)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)

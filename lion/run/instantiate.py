"""Building objects from config nodes: the task module (with what it learns from the data module), callbacks and
loggers (with the run directory and the kept wandb id)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from lion.run.checks import ConfigError
from lion.run.rundir import wandb_id


def data_attr(datamodule: L.LightningDataModule, attr: str) -> Any:
    """An attribute of the data module (docs/DESIGN.md section 3), calling prepare_data() and setup("fit") once if
    it is not known before set-up."""
    value = getattr(datamodule, attr, None)
    if value is None and not getattr(datamodule, "_lion_was_setup", False):
        datamodule.prepare_data()
        datamodule.setup("fit")
        datamodule._lion_was_setup = True
        value = getattr(datamodule, attr, None)
    return value


def fill_from_data(model_cfg: DictConfig, datamodule: L.LightningDataModule | None) -> DictConfig:
    """Copy of `model_cfg` with the task's `data_keys` left null filled from the data module."""
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    if datamodule is None:
        return cfg
    task_cls = hydra.utils.get_class(cfg._target_)
    for path, attr in getattr(task_cls, "data_keys", {}).items():
        if OmegaConf.select(cfg, path) is not None:
            continue
        value = data_attr(datamodule, attr)
        if value is not None:
            with open_dict(cfg):
                OmegaConf.update(cfg, path, value, force_add=True)
    return cfg


def build_task(model_cfg: DictConfig, datamodule: L.LightningDataModule | None = None) -> L.LightningModule:
    cfg = fill_from_data(model_cfg, datamodule)
    try:
        return hydra.utils.instantiate(cfg, _convert_="all")
    except hydra.errors.InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)) and "\n" not in str(cause):
            raise ConfigError(f"model: {cause}") from e
        raise


def instantiate_callbacks(cfg: DictConfig | None, run_dir: Path) -> list[L.Callback]:
    """Every node with a `_target_` under `callbacks` (null entries are switched off)."""
    out = []
    for name, node in (cfg or {}).items():
        if node is None or not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        kwargs = {}
        if node._target_.endswith(("ModelCheckpoint", "RunCheckpoint")) and node.get("dirpath") is None:
            kwargs["dirpath"] = str(Path(run_dir) / "checkpoints")
        out.append(hydra.utils.instantiate(node, **kwargs))
    return out


def instantiate_loggers(cfg: DictConfig | None, run_dir: Path) -> list:
    """Loggers under `logger`, writing into the run directory; wandb reuses the id kept in wandb_id.txt."""
    out = []
    for name, node in (cfg or {}).items():
        if node is None or not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        kwargs = {}
        if node._target_.endswith("WandbLogger"):
            if node.get("id") is None:
                kwargs["id"] = wandb_id(run_dir)
            kwargs.setdefault("resume", "allow")
        out.append(hydra.utils.instantiate(node, **kwargs))
    return out


def fsdp_strategy(wrap=("lion.models.layers.Block",), activation_checkpointing: bool = False, **kwargs):
    """FSDPStrategy whose wrapping unit (and, optionally, activation-checkpointing unit) is each of the module
    classes named in `wrap` (dotted paths)."""
    from lightning.pytorch.strategies import FSDPStrategy

    classes = {hydra.utils.get_class(name) for name in wrap}
    if activation_checkpointing:
        kwargs["activation_checkpointing_policy"] = classes
    return FSDPStrategy(auto_wrap_policy=classes, **kwargs)

"""Config checks run before anything is built: each mistake stops with ONE line that names the key, what it got and
the allowed values or the fix.

    from lion.run.checks import ConfigError, check_config
    check_config(cfg)            # raises ConfigError("model.chunk_size=0: must be a positive integer ...")

`train.py` and `eval.py` print the message and exit with status 2, so no traceback hides it.
Checks that need a built object (the image size a model accepts, the data a module finds) live beside the code
that builds it (`check_image_size` below, called by the pipeline once model and data exist).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lion.attentions import VIT_SIZES
from lion.ops.attention import BACKENDS, FORMS  # the core owns its forms and backends


PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64", "64-true", "bf16", "16")
# keys of a data config that name an input that must exist before training (not caches or outputs)
# (`root` is not among them: the data modules that take it report a missing root themselves, with the command that
# creates or fetches that data)
INPUT_PATH_KEYS = ("data_path", "train_path", "val_path", "test_path", "train_file", "val_file", "test_file",
                   "vocab_file", "tokenizer_path")


class ConfigError(ValueError):
    """A config value a user can fix; the message is one line naming the key and the fix."""


class RunError(ConfigError):
    """The run directory cannot be used as asked (held by another process, holds another run, damaged checkpoint);
    the message names the directory or file and the ways out."""


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def attention_names() -> tuple[str, ...]:
    """The allowed values of model.attention: the registry's (lion/attentions.py)."""
    from lion.attentions import ATTENTIONS

    return tuple(ATTENTIONS)


def check_choice(key: str, value: Any, allowed, hint: str = "") -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; use one of: {', '.join(map(str, allowed))}{hint}")


def check_positive_int(key: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive integer (for example {key}=64)")


def check_model(cfg: DictConfig, prefix: str = "model") -> None:
    """attention, form, chunk_size, backend and size of a model node (plain keys of every model config)."""
    m = _get(cfg, prefix)
    if m is None:
        raise ConfigError(f"{prefix}: no model selected; add model=<name> (see configs/model/)")
    attention = _get(m, "attention")
    if attention is not None:
        check_choice(f"{prefix}.attention", attention, attention_names())
    form = _get(m, "form")
    if form is not None:
        check_choice(f"{prefix}.form", form, FORMS)
        if attention == "softmax" and form not in ("parallel", "auto"):
            raise ConfigError(f"{prefix}.form={form!r}: softmax attention has only the parallel form; use "
                              f"{prefix}.form=parallel or a LION attention ({prefix}.attention=lion-s)")
    if "chunk_size" in m:
        check_positive_int(f"{prefix}.chunk_size", _get(m, "chunk_size"), allow_none=True)
    backend = _get(m, "backend")
    if backend is not None:
        check_choice(f"{prefix}.backend", backend, BACKENDS)
    if "size" in m and _get(m, "family") == "vit" and _get(m, "timm_name") is None:
        check_choice(f"{prefix}.size", _get(m, "size"), VIT_SIZES)
    net = _get(m, "net") or {}
    for key in ("img_size", "patch_size", "num_classes", "in_chans", "embed_dim", "depth", "num_heads"):
        if key in net and net[key] is not None and not (key == "num_classes" and net[key] == 0):
            check_positive_int(f"{prefix}.net.{key}", net[key])
    img, patch = net.get("img_size"), net.get("patch_size")
    if isinstance(img, int) and isinstance(patch, int) and img % patch:
        raise ConfigError(f"{prefix}.net.img_size={img} is not divisible by {prefix}.net.patch_size={patch}; use "
                          f"an image size that is a multiple of the patch size")


def check_paths(cfg: DictConfig, node: str = "data") -> None:
    """Inputs named in the data config must exist: a missing file stops here, before any model is built."""
    d = _get(cfg, node) or {}
    for key in INPUT_PATH_KEYS:
        value = d.get(key) if hasattr(d, "get") else None
        if not isinstance(value, str) or not value or "://" in value:
            continue
        if not Path(os.path.expanduser(value)).exists():
            how = _get(cfg, "data_command")
            how = f"create it with: {how}" if how else "README 'Data' says how to get each data set"
            raise ConfigError(f"{node}.{key}={value!r} does not exist; fix the path (override {node}.{key}=...) "
                              f"or {how}")


def check_trainer(cfg: DictConfig) -> None:
    t = _get(cfg, "trainer") or {}
    precision = t.get("precision") if hasattr(t, "get") else None
    if precision is not None:
        check_choice("trainer.precision", str(precision), PRECISIONS)
    gb = _get(cfg, "global_batch_size")
    if gb is not None:
        check_positive_int("global_batch_size", gb)
    clip = t.get("gradient_clip_val") if hasattr(t, "get") else None
    if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r}: must be a number >= 0 (or null for no clipping)")
    strategy = str(t.get("strategy", "")) if hasattr(t, "get") else ""
    callbacks = _get(cfg, "callbacks") or {}
    if "fsdp" in strategy.lower() and callbacks.get("ema") is not None:
        raise ConfigError("callbacks.ema does not work with trainer=fsdp (sharded weights); drop it with "
                          "~callbacks.ema or use trainer=ddp")


# Range checks of the values users commonly set: key -> (kind, allowed). Kinds: "int" (an integer, bools refused),
# "num" (int or float), "frac" (a number in [0, 1]). `allowed` is (low, high, low_open, high_open); None: unbounded.
# A null value is always accepted here (the owner of the key decides what null means).
_INF = None
VALUE_RULES: dict[str, tuple[str, tuple]] = {
    "seed": ("int", (None, None, False, False)),
    "repeated_aug": ("int", (1, None, False, False)),
    "trainer.max_epochs": ("int", (-1, None, False, False)),
    "trainer.min_epochs": ("int", (0, None, False, False)),
    "trainer.max_steps": ("int", (-1, None, False, False)),
    "trainer.num_nodes": ("int", (1, None, False, False)),
    "trainer.accumulate_grad_batches": ("int", (1, None, False, False)),
    "trainer.log_every_n_steps": ("int", (1, None, False, False)),
    "trainer.check_val_every_n_epoch": ("int", (1, None, False, False)),
    "trainer.num_sanity_val_steps": ("int", (-1, None, False, False)),
    "data.batch_size": ("int", (1, None, False, False)),
    "data.eval_batch_size": ("int", (1, None, False, False)),
    "data.num_workers": ("int", (0, None, False, False)),
    "data.image_size": ("int", (1, None, False, False)),
    "data.seq_len": ("int", (1, None, False, False)),
    "data.max_length": ("int", (1, None, False, False)),
    "data.max_samples": ("int", (1, None, False, False)),
    "data.prefetch_factor": ("int", (1, None, False, False)),
    "data.max_shift": ("int", (0, None, False, False)),
    "data.val_fraction": ("num", (0, 1, True, True)),
    "data.mlm_probability": ("num", (0, 1, True, True)),
    "data.eval_mlm_probability": ("num", (0, 1, True, True)),
    "model.label_smoothing": ("num", (0, 1, False, True)),
    "model.optimizer.lr": ("num", (0, None, True, False)),
    "model.optimizer.weight_decay": ("num", (0, None, False, False)),
    "model.optimizer.eps": ("num", (0, None, True, False)),
    "model.optimizer.momentum": ("num", (0, 1, False, True)),
    "model.optimizer.lr_scale_batch": ("num", (0, None, True, False)),
    "model.scheduler.warmup_epochs": ("num", (0, None, False, False)),
    "model.scheduler.warmup_steps": ("int", (0, None, False, False)),
    "model.scheduler.warmup_fraction": ("num", (0, 1, False, False)),
    "model.scheduler.warmup_lr": ("num", (0, None, False, False)),
    "model.scheduler.min_lr": ("num", (0, None, False, False)),
    "model.scheduler.final_lr_ratio": ("num", (0, 1, False, False)),
    "model.net.drop_path_rate": ("num", (0, 1, False, True)),
    "model.net.drop_rate": ("num", (0, 1, False, True)),
}


def _range_text(kind: str, bounds: tuple) -> str:
    lo, hi, lo_open, hi_open = bounds
    what = "an integer" if kind == "int" else "a number"
    if kind == "int" and hi is None and not lo_open and lo in (0, 1):
        return "a positive integer" if lo == 1 else "a non-negative integer"
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{what} {'<' if hi_open else '<='} {hi}"
    return what


def check_value(key: str, value: Any, kind: str, bounds: tuple) -> None:
    """One value against its rule; raises ConfigError naming the key, the value and what is allowed."""
    if value is None:
        return
    ok_type = not isinstance(value, bool) and (isinstance(value, int) if kind == "int" else
                                               isinstance(value, (int, float)))
    lo, hi, lo_open, hi_open = bounds
    ok = ok_type and (lo is None or (value > lo if lo_open else value >= lo)) and \
        (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        extra = " or auto" if key == "cpu_threads" else ""
        raise ConfigError(f"{key}={value!r}: must be {_range_text(kind, bounds)}{extra} (for example {key}="
                          f"{_example(kind, bounds)})")


def _example(kind: str, bounds: tuple):
    lo, hi, lo_open, _ = bounds
    if kind == "int":
        return max(1, lo if lo is not None else 1)
    if lo is not None and hi is not None:
        return (lo + hi) / 2
    return 1e-3 if lo_open else (lo if lo is not None else 1)


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of the commonly set keys (VALUE_RULES), plus the few that take several forms."""
    for key, (kind, bounds) in VALUE_RULES.items():
        check_value(key, _get(cfg, key), kind, bounds)
    threads = _get(cfg, "cpu_threads")
    if threads is not None and threads != "auto":
        check_value("cpu_threads", threads, "int", (1, None, False, False))
    betas = _get(cfg, "model.optimizer.betas")
    if betas is not None:
        if isinstance(betas, str) or not hasattr(betas, "__len__") or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"model.optimizer.betas={betas!r}: must be two numbers in [0, 1) (for example "
                              f"model.optimizer.betas=[0.9,0.999])")
    devices = _get(cfg, "trainer.devices")
    if devices is not None and not (devices == "auto" or devices == -1 or (isinstance(devices, int) and
                                    not isinstance(devices, bool) and devices > 0) or
                                    (isinstance(devices, str) and devices.replace(",", "").strip().isdigit()) or
                                    (hasattr(devices, "__len__") and not isinstance(devices, str) and len(devices) and
                                     all(isinstance(d, int) and d >= 0 for d in devices))):
        raise ConfigError(f"trainer.devices={devices!r}: must be a positive integer, -1 or 'auto' (all), or a list "
                          f"of device indices (for example trainer.devices=1)")
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches",
                "trainer.val_check_interval"):
        v = _get(cfg, key)
        if v is None:
            continue
        low = 0 if "limit" in key else 1
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, int) and v < low) or \
                (isinstance(v, float) and not (0.0 <= v <= 1.0 and (v > 0 or "limit" in key))):
            raise ConfigError(f"{key}={v!r}: must be an integer >= {low} (batches) or a fraction in "
                              f"{'[0' if 'limit' in key else '(0'}, 1] (of the epoch), e.g. {key}=0.25")


def check_accumulation(global_batch: int | None, micro_batch: int, world_size: int) -> int:
    """Gradient-accumulation steps that reach `global_batch` from `micro_batch` per device on `world_size`."""
    if global_batch is None:
        return 1
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(f"global_batch_size={global_batch} is not a multiple of data.batch_size x devices = "
                          f"{micro_batch} x {world_size} = {per_step}; change global_batch_size or data.batch_size")
    return global_batch // per_step


def check_image_size(model, image_size: int | None, key: str = "data.image_size") -> None:
    """A model built for one input size (timm `fixed_input_size`, strict patch embedding) must get exactly that
    size; any model needs a size divisible by its patch size."""
    if image_size is None:
        return
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        return
    patch = getattr(pe, "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    if patch and image_size % patch:
        raise ConfigError(f"{key}={image_size} is not divisible by the model's patch size {patch}; use a multiple "
                          f"of {patch} (or set model.net.patch_size)")
    fixed = bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False)) or \
        bool(getattr(pe, "strict_img_size", False))
    size = getattr(pe, "img_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    if fixed and size is not None and size != image_size:
        raise ConfigError(f"{key}={image_size} but the model takes exactly {size} px images; set "
                          f"model.net.img_size={image_size} or {key}={size}")


def check_config(cfg: DictConfig) -> None:
    """Every check that needs only the config. Raises ConfigError (one line)."""
    check_values(cfg)
    check_model(cfg)
    check_trainer(cfg)
    check_paths(cfg)
    pretrained = _get(cfg, "model.pretrained")
    if isinstance(pretrained, str) and pretrained and not Path(os.path.expanduser(pretrained)).exists():
        raise ConfigError(f"model.pretrained={pretrained!r} does not exist; give the checkpoint (.ckpt) or the "
                          f"exported model directory of a pre-training run (logs/runs/<run_id>/hf)")
    seed = _get(cfg, "seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed!r}: must be an integer")
    if _get(cfg, "data") is None:
        raise ConfigError("data: no data selected; add data=<name> (see configs/data/)")


def one_line(e: BaseException) -> str:
    """The message of `e` on one line (multi-line data errors joined with ' | ')."""
    return " | ".join(part.strip() for part in str(e).splitlines() if part.strip())


def run_or_exit(fn, cfg):
    """Run `fn(cfg)` (train or evaluate); a user mistake (bad config value, missing or corrupt data) ends the process
    with ONE line on stderr and exit status 2 instead of a traceback."""
    import logging
    import sys

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # Hydra's root handler prints these
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
    user_errors: tuple = (ConfigError,)
    try:
        from lion.data.common import CorruptDataError, DataNotFoundError
        user_errors += (DataNotFoundError, CorruptDataError)
    except ImportError:
        pass
    try:
        return fn(cfg)
    except user_errors as e:
        kind = ("run error" if isinstance(e, RunError) else "config error" if isinstance(e, ConfigError) else
                "data error")
        print(f"{kind}: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


# What may change between a run and its resumption: how it computes and where it writes, not what it trains.
# Every other key (seed, model, data, optimizer, schedule, trainer recipe, callbacks) is part of the run's identity.
RESUME_FREE = {"model.form", "model.chunk_size", "model.backend", "model.compile", "data.num_workers",
               "data.pin_memory", "data.persistent_workers", "data.eval_batch_size", "data.prefetch_factor",
               "data.data_dir", "data.lra_dir", "data.root", "data.source", "data.num_proc", "trainer.accelerator",
               "trainer.devices", "trainer.num_nodes", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
               "trainer.default_root_dir", "trainer.benchmark", "trainer.num_sanity_val_steps", "cpu_threads",
               "matmul_precision", "resume", "ckpt_path", "run_id", "experiment_name", "validate_best", "test",
               "export", "table", "hparams_search", "debug", "optimized_metric", "optimized_mode", "data_command"}
RESUME_FREE_PREFIXES = ("paths.", "logger.", "launcher.", "hydra.", "trainer.strategy", "trainer.plugins",
                        "callbacks.progress_bar", "callbacks.rich_progress_bar", "callbacks.last_checkpoint.every_n",
                        "callbacks.throughput.", "table.")


def _flat(node, prefix: str) -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


_ABSENT = "<absent>"


def check_same_run(saved: DictConfig, cfg: DictConfig, run_dir) -> None:
    """A run directory resumes only the run it holds: every value of the recipe, the seed included, must be the one
    it was started with (RESUME_FREE: form, chunk size, devices, workers, paths and logging may change)."""
    old = _flat(OmegaConf.to_container(saved, resolve=False), "")
    new = _flat(OmegaConf.to_container(cfg, resolve=True), "")
    for k in sorted(set(old) | set(new)):
        if k in RESUME_FREE or k.startswith(RESUME_FREE_PREFIXES) or k.split(".")[0] in RESUME_FREE:
            continue
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool)
                           and not isinstance(b, bool) and float(a) == float(b)):
            raise RunError(f"{run_dir} holds a run with {k}={a!r}, this command has {k}={b!r}; either resume that run "
                           f"unchanged (drop the override), or start a separate run with its own name (run_id=<new "
                           f"name>) — resume=false would instead delete this run's checkpoints and start it over")

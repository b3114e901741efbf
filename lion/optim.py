"""Optimizers and parameter groups of the task modules (lion.tasks.base builds them from `model.optimizer`).

    optimizer: {name: adamw | decoupled_adamw | adam | sgd, lr, weight_decay, betas, eps,
                param_groups: no_decay_norm_bias | all, no_weight_decay: [name fragments]}

`decoupled_adamw` is the optimizer of the paper's masked-LM and GLUE runs (MosaicML Composer's `DecoupledAdamW`):
before each Adam step every weight is multiplied by

    1 - weight_decay * lr_t / lr_0

where lr_t is the group's learning rate at that step (after the schedule) and lr_0 the learning rate the optimizer
was built with (the peak). The decay therefore follows the schedule's shape but is not scaled by the learning rate:
with weight_decay 1e-5 over 70,000 steps of a 6% warm-up / linear-decay schedule a weight without gradient shrinks
to about 0.70 of its value, where `torch.optim.AdamW` (decay lr_t * weight_decay) shrinks it by about 3e-4.

torch's AdamW applies `p *= 1 - lr_t * wd'` and then the same Adam step, so `wd' = weight_decay / lr_0` gives the
rule exactly (up to the rounding of one product); `DecoupledAdamW` below is that AdamW, so every torch code path
(for-each, fused CUDA kernel) and its state_dict apply unchanged. tests/test_optim.py checks it against a literal
transcription of the rule over a warm-up and decay schedule.
"""
from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import nn

from lion.run.checks import ConfigError

OPTIMIZERS = ("adamw", "decoupled_adamw", "adam", "sgd")
PARAM_GROUPS = ("no_decay_norm_bias", "all")


class DecoupledAdamW(torch.optim.AdamW):
    """Adam with weight decay decoupled from the learning rate (Composer's rule, see the module docstring).

    Args as torch.optim.AdamW; `weight_decay` is the per-step shrink at the peak learning rate (1e-5 in the paper's
    masked-LM runs). Each group keeps it as `decoupled_wd` and its construction lr as `initial_lr`;
    torch's own `weight_decay` of the group is set to their ratio.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 1e-5, **kwargs):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)
        for group in self.param_groups:
            lr0 = float(group["lr"])
            wd = float(group["weight_decay"])
            if wd and lr0 <= 0:
                raise ConfigError(f"decoupled_adamw: a parameter group has lr={lr0} and weight_decay={wd}; the decay "
                                  f"is relative to the initial lr, so give a positive model.optimizer.lr")
            group["initial_lr"] = lr0
            group["decoupled_wd"] = wd
            group["weight_decay"] = wd / lr0 if wd else 0.0


def param_groups(module: nn.Module, weight_decay: float, no_decay_fragments=(),
                 mode: str = "no_decay_norm_bias") -> list[dict]:
    """Parameter groups for the optimizer.

    mode "all": one group, weight decay on every trainable parameter (the paper's masked-LM and GLUE runs: Composer
    gets `model.parameters()`).
    mode "no_decay_norm_bias": two groups, with weight decay and without it for biases, norm weights and every other
    parameter with ndim <= 1 (LION-D decay logits), embeddings (nn.Embedding tables), the names a submodule lists in
    `no_weight_decay()` (timm convention: cls_token, pos_embed), and names containing any of `no_decay_fragments`
    (e.g. "decay" for the LION-S gate weights).
    """
    if mode not in PARAM_GROUPS:
        raise ConfigError(f"model.optimizer.param_groups={mode!r} is unknown; use one of {', '.join(PARAM_GROUPS)}")
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if mode == "all":
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    skip_ids = set()
    for _, sub in module.named_modules():
        if isinstance(sub, nn.Embedding):
            skip_ids.update(id(p) for p in sub.parameters())
        nwd = getattr(sub, "no_weight_decay", None)
        if callable(nwd) and not isinstance(sub, L.LightningModule):
            names = set(nwd())
            for n, p in sub.named_parameters():
                if n in names:
                    skip_ids.add(id(p))
    decay, no_decay = [], []
    for name, p in trainable:
        if p.ndim <= 1 or id(p) in skip_ids or any(f in name for f in no_decay_fragments):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, o: dict, lr: float, fused: bool | None = None) -> torch.optim.Optimizer:
    """The optimizer of `module` from an optimizer config node `o` (see the module docstring) at peak lr `lr`."""
    name = o["name"]
    if name not in OPTIMIZERS:
        raise ConfigError(f"model.optimizer.name={name!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
    groups = param_groups(module, float(o["weight_decay"]), tuple(o.get("no_weight_decay") or ()),
                          o.get("param_groups") or "no_decay_norm_bias")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False))
    cls = {"adamw": torch.optim.AdamW, "decoupled_adamw": DecoupledAdamW, "adam": torch.optim.Adam}[name]
    return cls(groups, lr=lr, betas=tuple(o["betas"]), eps=float(o["eps"]), fused=fused)

"""Optimizers and parameter groups of the task modules (lion.tasks.base builds them from `model.optimizer`).

    optimizer: {name: adamw | decoupled_adamw | adam | sgd, lr, weight_decay, betas, eps,
                param_groups: no_decay_norm_bias | all, no_weight_decay: [name fragments],
                lr_mult: {name fragment: factor}}

`lr_mult` scales the learning rate of the parameters whose names contain a fragment (the first fragment that
matches; e.g. `{decay: 10}` for the LION-D decay logits and the LION-S gates): their own parameter group, whose
schedule has the same shape (warm-up and floor scale with it). A fragment that matches no parameter is an error.

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


def _lr_mults(lr_mult) -> dict[str, float]:
    """Check `model.optimizer.lr_mult`: a mapping of name fragments to positive factors."""
    if not lr_mult:
        return {}
    if not hasattr(lr_mult, "items"):
        raise ConfigError(f"model.optimizer.lr_mult must map parameter-name fragments to factors, e.g. "
                          f"'{{decay: 10}}', got {lr_mult!r}")
    out = {}
    for frag, m in lr_mult.items():
        try:
            m = float(m)
        except (TypeError, ValueError):
            m = float("nan")
        if not m > 0:
            raise ConfigError(f"model.optimizer.lr_mult.{frag}={lr_mult[frag]!r}: a factor must be a positive number")
        out[str(frag)] = m
    return out


def param_groups(module: nn.Module, weight_decay: float, no_decay_fragments=(),
                 mode: str = "no_decay_norm_bias", lr_mult=None) -> list[dict]:
    """Parameter groups for the optimizer.

    mode "all": one group, weight decay on every trainable parameter (the paper's masked-LM and GLUE runs: Composer
    gets `model.parameters()`).
    mode "no_decay_norm_bias": two groups, with weight decay and without it for biases, norm weights and every other
    parameter with ndim <= 1 (LION-D decay logits), embeddings (nn.Embedding tables), the names a submodule lists in
    `no_weight_decay()` (timm convention: cls_token, pos_embed), and names containing any of `no_decay_fragments`
    (e.g. "decay" for the LION-S gate weights).
    lr_mult {fragment: factor}: those parameters go to groups of their own with `lr_mult` set (build_optimizer
    multiplies the lr by it); groups without it have the optimizer's lr.
    """
    if mode not in PARAM_GROUPS:
        raise ConfigError(f"model.optimizer.param_groups={mode!r} is unknown; use one of {', '.join(PARAM_GROUPS)}")
    mults = _lr_mults(lr_mult)
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    unused = [f for f in mults if not any(f in n for n, _ in trainable)]
    if unused:
        raise ConfigError(f"model.optimizer.lr_mult: no trainable parameter name contains {', '.join(map(repr, unused))}"
                          f"; names look like {', '.join(n for n, _ in trainable[:3])}, ... (fix the fragment or "
                          "remove it)")
    if mults:
        groups: dict[tuple, dict] = {}
        for sub in param_groups(module, weight_decay, no_decay_fragments, mode):
            ids = {id(p) for p in sub["params"]}
            for n, p in trainable:
                if id(p) in ids:
                    m = next((mults[f] for f in mults if f in n), 1.0)
                    g = groups.setdefault((sub["weight_decay"], m), {"params": [], "weight_decay": sub["weight_decay"],
                                                                     **({"lr_mult": m} if m != 1.0 else {})})
                    g["params"].append(p)
        return list(groups.values())
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
                          o.get("param_groups") or "no_decay_norm_bias", o.get("lr_mult"))
    for g in groups:
        if "lr_mult" in g:
            g["lr"] = lr * g["lr_mult"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False))
    cls = {"adamw": torch.optim.AdamW, "decoupled_adamw": DecoupledAdamW, "adam": torch.optim.Adam}[name]
    return cls(groups, lr=lr, betas=tuple(o["betas"]), eps=float(o["eps"]), fused=fused)

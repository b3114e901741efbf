"""The attention registry and the one encoder every model family is built on.

    build_attention("lion-s", dim=384, num_heads=6, form="chunk")   -> LionAttention
    build_attention("softmax", dim=384, num_heads=6, form="chunk")  -> SoftmaxAttention (LION-only options ignored)
    Encoder(dim, depth, num_heads, attention="lion-d-ms", ...)      -> pre-norm blocks + final norm

Names (the one registry, lion/attentions.py): lion-lit, lion-d, lion-s (docs/MATH.md section 3), lion-d-ms,
lion-s-ms (two-scan "natural" variants, section 4) and softmax; the decays live in lion/models/decays.py. Options that only one kind of mixer understands are dropped for the other kind, so one config builds
a LION model and its softmax twin; an option no mixer knows is an error.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.utils.checkpoint
from torch import nn

from lion.attentions import ATTENTIONS as REGISTRY
from lion.attentions import canonical_name  # noqa: F401  (re-exported: lion.models.registry.canonical_name)
from lion.models.decays import DECAY_PARAMETER_NAMES
from lion.models.layers import Block, LionAttention, SoftmaxAttention, check_form

# name -> the mixer options of that attention (None: softmax), from the one registry in lion/attentions.py
ATTENTIONS = {a.name: (dict(decay=a.decay, num_scans=a.num_scans) if a.is_lion else None)
              for a in REGISTRY.values()}
LION_ONLY = frozenset({"feature_map", "normalize", "scale", "attn_norm", "form", "chunk_size", "backend",
                       "decay_horizon", "norm_eps", "score_dropout", "decay_init", "gate", "gate_eps", "gate_detach",
                       "selective_mask", "prefix_unit_decay", "denominator_eps"})
SOFTMAX_ONLY = frozenset({"attn_drop"})
COMMON = frozenset({"qkv_bias", "proj_bias", "proj_drop"})


def build_attention(name: str, dim: int, num_heads: int, **opts) -> nn.Module:
    """Build the token mixer `name` for width `dim` and `num_heads` heads.

    opts: LionAttention options (feature_map, normalize, scale, attn_norm, form, chunk_size, backend,
    decay_horizon, norm_eps, score_dropout, decay_init, gate, gate_eps, gate_detach, selective_mask,
    prefix_unit_decay, denominator_eps), SoftmaxAttention's attn_drop, and the common qkv_bias, proj_bias, proj_drop.
    Softmax attention always scales by head_dim ** -0.5 (LION's `scale` is a LION option).
    """
    key = canonical_name(name)
    unknown = set(opts) - LION_ONLY - SOFTMAX_ONLY - COMMON
    if unknown:
        raise TypeError(f"build_attention({name!r}): unknown option(s) {sorted(unknown)}; allowed: "
                        f"{sorted(LION_ONLY | SOFTMAX_ONLY | COMMON)}")
    if key == "softmax":
        kept = {k: v for k, v in opts.items() if k in SOFTMAX_ONLY | COMMON}
        return SoftmaxAttention(dim, num_heads, **kept)
    kept = {k: v for k, v in opts.items() if k in LION_ONLY | COMMON}
    return LionAttention(dim, num_heads, **ATTENTIONS[key], **kept)


def set_form(module: nn.Module, form: str, chunk_size: int | None = None, backend: str | None = None) -> nn.Module:
    """Set the form (and chunk size, backend) of every LION mixer inside `module`. Returns `module`."""
    check_form(form, 1 if chunk_size is None else chunk_size, backend or "auto")
    for m in module.modules():
        if isinstance(m, LionAttention):
            m.set_form(form, chunk_size, backend)
    return module


def decay_parameter_names(module: nn.Module) -> set[str]:
    """Names of the decay parameters (LION-D logits, LION-S gate weights and biases), e.g. to exclude them from
    weight decay or count them."""
    return {n for n, _ in module.named_parameters()
            if any(f".{p}." in f".{n}." for p in DECAY_PARAMETER_NAMES)}


class Encoder(nn.Module):
    """`depth` pre-norm (or post-norm) blocks around the mixer `attention`, then a final LayerNorm.

    Args:
        dim, depth, num_heads: width, number of blocks, heads per mixer.
        attention: registry name (see `ATTENTIONS`).
        mlp_ratio: hidden width of the MLP over dim (or mlp_hidden: the width itself).
        qkv_bias: bias of the q, k, v projection.
        drop_rate: dropout after the mixer and inside the MLP. attn_drop_rate: softmax attention dropout.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        norm_layer, act_layer: LayerNorm (eps 1e-6 by default) and GELU by default.
        final_norm: apply `norm` after the last block.
        post_norm: post-norm blocks (see `Block`); mlp_inner_dropout: dropout between the MLP's layers.
        **attn_opts: further mixer options, see `build_attention`.

    forward(x [B, L, C], attention_mask [B, L] | None, grid_size=None, num_prefix_tokens=0) -> [B, L, C];
    `grid_size` (h, w) tells the two-scan mixers how the tokens after the prefix tokens lie on a grid.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, attention: str = "lion-s", *, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_layer=None, act_layer=None, final_norm: bool = True,
                 mlp_hidden: int | None = None, post_norm: bool = False, mlp_inner_dropout: bool = True,
                 **attn_opts):
        super().__init__()
        self.attention = canonical_name(attention)
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(dim, build_attention(self.attention, dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop_rate,
                                       attn_drop=attn_drop_rate, **attn_opts),
                  mlp_ratio=mlp_ratio, drop=drop_rate, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer,
                  mlp_hidden=mlp_hidden, post_norm=post_norm, mlp_inner_dropout=mlp_inner_dropout)
            for i in range(depth)])
        self.norm = norm_layer(dim) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Change the form of every LION mixer (weights and outputs unchanged). Returns self."""
        return set_form(self, form, chunk_size, backend)

    def forward_blocks(self, x: torch.Tensor, attention_mask=None, grid_size=None, num_prefix_tokens: int = 0,
                       return_hidden_states: bool = False):
        """Run the blocks (no final norm). Returns x, or (x, [input of block 0, ..., output of the last block])."""
        hidden = [x]
        for blk in self.blocks:
            x = self.run_block(blk, x, attention_mask, grid_size, num_prefix_tokens)
            hidden.append(x)
        return (x, hidden) if return_hidden_states else x

    def run_block(self, blk: nn.Module, x: torch.Tensor, attention_mask=None, grid_size=None,
                  num_prefix_tokens: int = 0) -> torch.Tensor:
        """One block, through activation checkpointing when it is on and gradients are needed."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(blk, x, attention_mask, grid_size=grid_size,
                                                     num_prefix_tokens=num_prefix_tokens, use_reentrant=False)
        return blk(x, attention_mask, grid_size=grid_size, num_prefix_tokens=num_prefix_tokens)

    def forward(self, x: torch.Tensor, attention_mask=None, grid_size=None, num_prefix_tokens: int = 0):
        return self.norm(self.forward_blocks(x, attention_mask, grid_size, num_prefix_tokens))

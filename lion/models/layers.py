"""Building blocks shared by every model family: the LION mixer, its softmax twin, the MLP and the pre-norm block.

Shapes: x [B, L, C] with C = num_heads * head_dim; attention_mask [B, L], True/1 for real tokens.

    LionAttention     q, k, v projections -> feature map -> LION core (lion.ops) -> optional LayerNorm -> proj
    SoftmaxAttention  the same projections -> scaled_dot_product_attention -> proj
    Mlp               fc1 -> act -> drop -> fc2 -> drop
    Block             x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))  (or post-norm)

Parameter names follow timm's VisionTransformer (`qkv`, `proj`, `norm1`, `mlp.fc1`, ...), so a softmax twin with
learned position embeddings loads timm ViT weights. The decay parameters are `decay_logit` (LION-D, one logit
theta per scan and head: lambda = sigmoid(theta)) and `decay_proj` (LION-S, a `DecayGate` Linear from the layer
input to one logit per scan and head: lambda_i = sigmoid(w . x_i + b)).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from lion.models.decays import (DECAY_INITS, DECAYS, GATES, SELECTIVE_MASKS, DecayGate, initial_decays,  # noqa: F401
                                 initial_logits)
from lion.ops import FORMS, BACKENDS, lion_attention, lion_attention_multiscan, snake_orders
from lion.ops.naive import decay_mask, prepare_inputs, safe_den

FEATURE_MAPS = ("auto", "elu1", "silu_norm", "none")


def elu1(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1 > 0: the Linear Transformer's feature map (LION-LIT)."""
    return F.elu(x) + 1


def silu_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalised shifted SiLU over the head dim: (silu(x) + 0.5) / ||silu(x) + 0.5||_2 (LION-D, LION-S).

    silu(x) >= -0.279, so every entry is positive and the norm never vanishes.
    """
    y = F.silu(x) + 0.5
    return y / y.norm(dim=-1, keepdim=True)


def _identity(x):
    return x


_FEATURE_FNS = {"elu1": elu1, "silu_norm": silu_norm, "none": _identity}


class _FeatureMap(torch.autograd.Function):
    """scale * phi(x) for phi = elu1 or silu_norm with a backward that keeps only x (a view of the qkv projection,
    which is alive anyway) and recomputes phi: autograd would keep two extra [B, H, L, D] tensors per map.
        elu1:       d/dx = 1 (x > 0), exp(x) (x <= 0)
        silu_norm:  y = silu(x) + 0.5, out = y / |y|:  d out = (g - out (g . out)) / |y|,  d y / dx = silu'(x)"""

    @staticmethod
    def forward(ctx, x, name, scale):
        ctx.name, ctx.scale = name, scale
        ctx.save_for_backward(x)
        return _FEATURE_FNS[name](x) * scale

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g * ctx.scale
        if ctx.name == "elu1":
            return torch.where(x > 0, g, g * torch.exp(torch.clamp(x, max=0))).to(x.dtype), None, None
        sig = torch.sigmoid(x)
        y = x * sig + 0.5
        norm = y.norm(dim=-1, keepdim=True)
        out = y / norm
        gy = (g - out * (g * out).sum(-1, keepdim=True)) / norm
        return (gy * (sig * (1 + x * (1 - sig)))).to(x.dtype), None, None


def feature_map(x: torch.Tensor, name: str, scale: float = 1.0) -> torch.Tensor:
    """scale * phi(x) for the named feature map (see FEATURE_MAPS), memory-lean in training."""
    if name == "none":
        return x * scale if scale != 1.0 else x
    if name == "elu1" or not torch.is_grad_enabled() or not x.requires_grad:  # elu1: autograd keeps one tensor
        return _FEATURE_FNS[name](x) * scale
    return _FeatureMap.apply(x, name, scale)


def check_form(form, chunk_size, backend="auto", owner="set_form"):
    """Raise one ValueError naming the bad value and the allowed ones."""
    if form not in FORMS:
        raise ValueError(f"{owner}: form={form!r} is unknown; use one of {FORMS}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{owner}: chunk_size must be a positive integer, got {chunk_size!r}")
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: backend={backend!r} is unknown; use one of {BACKENDS}")


class LionAttention(nn.Module):
    """LION bidirectional linear attention as a token mixer (docs/MATH.md section 3, multi-scan: section 4).

    Args:
        dim: model width C; num_heads: H (C must divide by H).
        decay: "none" (LION-LIT), "fixed" (LION-D: one learnable lambda_h = sigmoid(theta_h) per head) or
            "selective" (LION-S: lambda_ih = sigmoid(w_h . x_i + b_h) from the layer input x, in log space).
        num_scans: 1, or 2 for the natural variants (row and column snake over the patch grid, each scan with its
            own decay parameters; needs `grid_size` in forward or a square grid).
        feature_map: "elu1", "silu_norm", "none" or "auto" (elu1 for LIT, silu_norm for D and S, the paper's
            vision defaults).
        normalize: divide by the shared normaliser (True: the paper's vision code; its masked-LM code used False).
        scale: multiplier on q after the feature map; None means head_dim ** -0.5 (cancels when normalize=True).
        attn_norm: LayerNorm over C after attention, before the output projection (the paper's masked-LM LION-LIT).
        qkv_bias, proj_bias: biases of the projections. proj_drop: dropout after the output projection.
        form, chunk_size, backend: how the core computes (see `lion.ops.lion_attention`); change them later with
            `set_form` without touching the weights.
        decay_horizon: (lo, hi) memory horizons in tokens that set the initial decays, see `initial_decays`.
        norm_eps: epsilon of the attention LayerNorm.
        score_dropout: dropout on the masked attention scores A = (q k^T) * M while training: y = dropout(A / A 1) V
            (normalised) or dropout(A) V (unnormalised), the paper's masked-LM recipe. It needs the L x L scores, so
            a training step computes the parallel form: with form="auto" it switches to it, with form "chunk" or
            "recurrent" it raises (eval and inference use the set form; dropout is then the identity).
        decay_init: "default" (decays spread over the heads, see `initial_decays`) or "paper" (the paper's code:
            LION-D logits from a standard normal, LION-S gate bias 0).
        gate: the LION-S gate, "sigmoid" (lambda = sigmoid(z), z = w.x + b) or "one_minus_sigmoid"
            (lambda = 1 - sigmoid(z), as the authors' code writes it; the same family with (w, b) negated).
        gate_eps: a constant added inside the log: log(lambda + gate_eps) (the authors' masked-LM code: 1e-7).
        gate_detach: cut the gate from the graph, so w and b never train (the authors' vision code).
        selective_mask: "symmetric" (the project's LION-S mask, lambda_{j+1} ... lambda_i below the diagonal) or
            "paper_code" (the authors' code: lambda_j ... lambda_{i-1} below it; the same above it), built from
            `lion.ops.paper_code_log_decays` in every form.
        prefix_unit_decay: the LION-S decay of the `num_prefix_tokens` first tokens (the class token) is 1 (the
            authors' vision code).
        denominator_eps: a constant added to the normaliser, y = num / (den + denominator_eps) for the mean mask of
            the scans (the authors' parallel form adds 1e-6; their recurrent and chunk forms add nothing). The
            constant is added to the parts of the core, so every form computes the same function.

    forward(x [B, L, C], attention_mask [B, L] | None, grid_size (h, w) | None, num_prefix_tokens) -> [B, L, C].
    """

    def __init__(self, dim: int, num_heads: int = 8, *, decay: str = "selective", num_scans: int = 1,
                 feature_map: str = "auto", normalize: bool = True, scale: float | None = None,
                 attn_norm: bool = False, qkv_bias: bool = True, proj_bias: bool = True, proj_drop: float = 0.0,
                 form: str = "auto", chunk_size: int = 64, backend: str = "auto",
                 decay_horizon: Sequence[float] = (4.0, 256.0), norm_eps: float = 1e-6, score_dropout: float = 0.0,
                 decay_init: str = "default", gate: str = "sigmoid", gate_eps: float = 0.0, gate_detach: bool = False,
                 selective_mask: str = "symmetric", prefix_unit_decay: bool = False, denominator_eps: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LionAttention: dim={dim} must be divisible by num_heads={num_heads}")
        if decay not in DECAYS:
            raise ValueError(f"LionAttention: decay={decay!r} is unknown; use one of {tuple(DECAYS)}")
        if num_scans not in (1, 2):
            raise ValueError(f"LionAttention: num_scans must be 1 or 2, got {num_scans!r}")
        if num_scans == 2 and decay == "none":
            raise ValueError("LionAttention: the two-scan variant needs a decay ('fixed' or 'selective'); without "
                             "decay every scan order gives the same mask, use num_scans=1")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"LionAttention: feature_map={feature_map!r} is unknown; use one of {FEATURE_MAPS}")
        check_form(form, chunk_size, backend, owner="LionAttention")
        self._decay = DECAYS[decay](num_heads, num_scans, horizon=decay_horizon, init=decay_init, gate=gate,
                                    gate_eps=gate_eps, gate_detach=gate_detach, selective_mask=selective_mask,
                                    prefix_unit_decay=prefix_unit_decay)
        for key, value in (("score_dropout", score_dropout), ("denominator_eps", denominator_eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    key == "score_dropout" and value >= 1):
                bound = " and < 1" if key == "score_dropout" else ""
                raise ValueError(f"LionAttention: {key} must be a number >= 0{bound}, got {value!r}")
        self.score_dropout = float(score_dropout)
        self.denominator_eps = float(denominator_eps)
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.decay, self.num_scans = decay, num_scans
        self.feature_map = ("elu1" if decay == "none" else "silu_norm") if feature_map == "auto" else feature_map
        self.normalize = bool(normalize)
        self.scale = self.head_dim ** -0.5 if scale is None else float(scale)
        self.form, self.chunk_size, self.backend = form, chunk_size, backend
        self.decay_horizon = self._decay.horizon

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self._decay.create(self, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self._orders = {}
        self.reset_decay_parameters()

    # the decay's options, read through the mixer (lion.models.decays owns them)
    decay_init = property(lambda self: self._decay.init)
    gate = property(lambda self: self._decay.gate)
    gate_eps = property(lambda self: self._decay.gate_eps)
    gate_detach = property(lambda self: self._decay.gate_detach)
    selective_mask = property(lambda self: self._decay.selective_mask)
    prefix_unit_decay = property(lambda self: self._decay.prefix_unit_decay)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, d in _NON_DEFAULTS if getattr(self, k) != d)
        return (f"heads={self.num_heads}, decay={self.decay}, scans={self.num_scans}, feature_map={self.feature_map}, "
                f"normalize={self.normalize}, scale={self.scale:.4g}, form={self.form}, chunk_size={self.chunk_size}"
                + extra)

    @torch.no_grad()
    def reset_decay_parameters(self, copy_=None, normal_=None):
        """Initialise the decay parameters (lion.models.decays: LION-D logits and the LION-S gate bias spread over
        the heads, or the paper's init with decay_init="paper"). `copy_(param, value)` writes a value and
        `normal_(param, mean, std)` draws one (default: in place); Hugging Face passes its init-aware functions."""
        self._decay.reset(self, copy_, normal_)

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Change how the core computes (outputs unchanged up to rounding). Returns self."""
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        backend = self.backend if backend is None else backend
        check_form(form, chunk_size, backend)
        self.form, self.chunk_size, self.backend = form, chunk_size, backend
        return self

    def log_decays(self, x: torch.Tensor, num_prefix_tokens: int = 0) -> list:
        """One log-decay per scan: None (LIT), [H] (D) or [B, H, L] (S), in raster (input) order, in float32 (float64
        for a float64 model); see lion.models.decays."""
        return self._decay.log_decays(self, x, num_prefix_tokens)

    def scan_orders(self, L: int, grid_size, num_prefix_tokens: int, device) -> list:
        """Row and column snake orders for an h x w grid after `num_prefix_tokens` tokens (cached per shape)."""
        if grid_size is None:
            side = math.isqrt(max(L - num_prefix_tokens, 0))
            if side * side != L - num_prefix_tokens:
                raise ValueError(f"LionAttention (two-scan): cannot infer the 2-D grid of {L} tokens with "
                                 f"{num_prefix_tokens} prefix tokens; pass grid_size=(h, w) to forward")
            grid_size = (side, side)
        h, w = (int(s) for s in grid_size)
        if num_prefix_tokens + h * w != L:
            raise ValueError(f"LionAttention (two-scan): grid_size={grid_size} with {num_prefix_tokens} prefix "
                             f"tokens needs L = {num_prefix_tokens + h * w} tokens, got L = {L}")
        key = (h, w, num_prefix_tokens, str(device))
        if key not in self._orders:
            self._orders[key] = snake_orders(h, w, num_prefix_tokens, device=device)
        return self._orders[key]

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, grid_size=None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = feature_map(q, self.feature_map, self.scale), feature_map(k, self.feature_map)
        kw = dict(form=self.form, chunk_size=self.chunk_size, backend=self.backend, normalize=self.normalize,
                  attention_mask=attention_mask)
        log_decays = self.log_decays(x, num_prefix_tokens)
        orders = [None] if self.num_scans == 1 else self.scan_orders(L, grid_size, num_prefix_tokens, x.device)
        drop = self.score_dropout > 0 and self.training
        if drop or self.denominator_eps or self._decay.needs_parts:
            y = self._attend_parts(q, k, v, log_decays, orders, attention_mask, drop)
        elif self.num_scans == 1:
            y = lion_attention(q, k, v, log_decays[0], **kw)
        else:
            y = lion_attention_multiscan(q, k, v, log_decays, orders, **kw)
        y = self.norm(y.transpose(1, 2).reshape(B, L, C))
        return self.proj_drop(self.proj(y))

    def _scan_decay(self, a, order):
        """The log-decay of one scan in scan order (`order` None: raster), as the core takes it."""
        return self._decay.for_core(a, order)

    def _attend_parts(self, q, k, v, log_decays, orders, attention_mask, drop: bool):
        """The core's numerator and denominator summed over the scans (in raster order), then the division with
        `denominator_eps`; with `drop` the masked scores are materialised and dropped out (parallel form)."""
        if drop and self.form not in ("auto", "parallel"):
            raise ValueError(f"LionAttention: score_dropout={self.score_dropout} drops entries of the L x L score "
                             f"matrix, so training needs the parallel form, but this mixer is set to "
                             f"form={self.form!r}; use form='parallel' or 'auto' (auto trains in the parallel form "
                             "when score dropout is on), or score_dropout=0")
        S = len(orders)
        num = den = None
        if drop:
            scores = None
            for order, a in zip(orders, log_decays):
                qs, ks, ms = q, k, attention_mask
                if order is not None:
                    qs, ks = q.index_select(2, order), k.index_select(2, order)
                    ms = attention_mask.index_select(-1, order) if attention_mask is not None else None
                A = masked_scores(qs, ks, self._scan_decay(a, order), ms)
                if order is not None:
                    inv = torch.argsort(order)
                    A = A.index_select(-2, inv).index_select(-1, inv)
                scores = A if scores is None else scores + A
            den = scores.sum(-1)
            vv = v.to(scores.dtype)
            if attention_mask is not None:
                vv = torch.where(attention_mask.to(torch.bool)[:, None, :, None], vv, torch.zeros((), dtype=vv.dtype,
                                                                                                  device=vv.device))
            num = F.dropout(scores, self.score_dropout, training=True) @ vv
        else:
            kw = dict(form=self.form, chunk_size=self.chunk_size, backend=self.backend, normalize=self.normalize,
                      return_parts=True)
            for order, a in zip(orders, log_decays):
                if order is None:
                    n_s, d_s = lion_attention(q, k, v, self._scan_decay(a, None), attention_mask=attention_mask, **kw)
                else:
                    ms = attention_mask.index_select(-1, order) if attention_mask is not None else None
                    n_s, d_s = lion_attention(q.index_select(2, order), k.index_select(2, order),
                                              v.index_select(2, order), self._scan_decay(a, order), attention_mask=ms,
                                              **kw)
                    inv = torch.argsort(order)
                    n_s, d_s = n_s.index_select(2, inv), d_s.index_select(2, inv)
                num = n_s if num is None else num + n_s
                den = d_s if den is None else den + d_s
        if self.normalize:
            y = num / safe_den(den + S * self.denominator_eps, 1e-6)[..., None]
        else:
            y = num / S if S > 1 else num
        return y.to(q.dtype)


_NON_DEFAULTS = (("score_dropout", 0.0), ("decay_init", "default"), ("gate", "sigmoid"), ("gate_eps", 0.0),
                 ("gate_detach", False), ("selective_mask", "symmetric"), ("prefix_unit_decay", False),
                 ("denominator_eps", 0.0))


def masked_scores(q, k, log_decay, attention_mask=None) -> torch.Tensor:
    """The masked scores A = (q k^T) * M of the parallel form, [B, H, L, L] in the accumulation dtype; pad keys
    (and pad queries) give zero entries. log_decay: None, [H], [B, H, L] or a (forward, backward) pair."""
    q, k, _, a = prepare_inputs(q, k, k[..., :1], log_decay, attention_mask)
    A = q @ k.transpose(-1, -2)
    M = decay_mask(a, q.shape[-2], q.device, q.dtype)
    return A if M is None else A * M


class SoftmaxAttention(nn.Module):
    """Softmax attention (PyTorch SDPA) with the same projections as LionAttention: the twin of every LION model.

    forward(x [B, L, C], attention_mask [B, L] | None, **ignored) -> [B, L, C]; pad keys are masked out.
    """

    def __init__(self, dim: int, num_heads: int = 8, *, qkv_bias: bool = True, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SoftmaxAttention: dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_drop = float(attn_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, attn_drop={self.attn_drop}"

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Softmax attention has one form; the arguments are validated and otherwise ignored. Returns self."""
        check_form(form, 1 if chunk_size is None else chunk_size, backend or "auto")
        return self

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, grid_size=None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Mlp(nn.Module):
    """Two-layer MLP: [..., C] -> [..., hidden] -> [..., out]; `inner_dropout=False` drops only after fc2 (BERT's
    MLP: no dropout between the two layers)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer=nn.GELU, drop: float = 0.0, bias: bool = True, inner_dropout: bool = True):
        super().__init__()
        hidden_features, out_features = hidden_features or in_features, out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop if inner_dropout else 0.0)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Transformer block around a given token mixer `attn` (LionAttention or SoftmaxAttention).

    Pre-norm (default): x + attn(norm1(x)), then x + mlp(norm2(x)). Post-norm (`post_norm=True`, the original
    BERT and the paper's masked-LM code): norm1(x + attn(x)), then norm2(x + mlp(x)); same parameters.
    The MLP is dim -> mlp_hidden (default int(dim * mlp_ratio)) -> dim; `mlp_inner_dropout=False` leaves out the
    dropout between its two layers.

    forward(x [B, L, C], attention_mask, **mixer_kwargs (grid_size, num_prefix_tokens)) -> [B, L, C].
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer=nn.LayerNorm, act_layer=nn.GELU, mlp_hidden: int | None = None,
                 post_norm: bool = False, mlp_inner_dropout: bool = True):
        super().__init__()
        self.post_norm = bool(post_norm)
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio), act_layer=act_layer, drop=drop,
                       inner_dropout=mlp_inner_dropout)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, **mixer_kwargs) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + self.drop_path1(self.attn(x, attention_mask, **mixer_kwargs)))
            return self.norm2(x + self.drop_path2(self.mlp(x)))
        x = x + self.drop_path1(self.attn(self.norm1(x), attention_mask, **mixer_kwargs))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

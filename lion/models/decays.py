"""The decays of the LION mixer, one class per kind: what parameters it needs, how they start, and the log-decays
it hands to the core (docs/MATH.md sections 1, 3, 4, 8).

    NoDecay     "none"       LION-LIT: lambda = 1, no parameters
    HeadDecay   "fixed"      LION-D: one learnable logit theta per scan and head, lambda_h = sigmoid(theta_h)
    TokenDecay  "selective"  LION-S: a gate from the layer input, lambda_ih = sigmoid(w_h . x_i + b_h)

A decay creates its parameters on the mixer under the names checkpoints have always used (`decay_logit`,
`decay_proj`), so every saved model keeps loading; the two-scan variants get one row of parameters per scan.
A new kind of decay is one subclass here and one entry in `DECAYS` (and an attention that uses it in
`lion/attentions.py`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lion.ops import paper_code_log_decays

DECAY_INITS = ("default", "paper")
GATES = ("sigmoid", "one_minus_sigmoid")
SELECTIVE_MASKS = ("symmetric", "paper_code")


def initial_decays(num_heads: int, horizon: Sequence[float] = (4.0, 256.0)) -> torch.Tensor:
    """Initial decay lambda_h per head, float64 [H], spread over the heads.

    The memory horizon 1 / (1 - lambda_h) (the number of tokens over which the mask falls by a factor e, roughly)
    is spaced geometrically from horizon[0] to horizon[1] across the heads, at the centres of H equal bins in log
    space: with the default (4, 256) a 3-head model starts at lambda = (0.875, 0.969, 0.992) and a 12-head
    model covers 0.79 ... 0.995, so some heads start local (a few patches) and some global (the whole 14 x 14 grid), as
    in RetNet's multi-scale decay. Every lambda stays learnable.
    """
    lo, hi = (float(h) for h in horizon)
    if not 1.0 < lo <= hi:
        raise ValueError(f"decay_horizon must be (lo, hi) with 1 < lo <= hi (in tokens), got {tuple(horizon)}")
    t = (torch.arange(num_heads, dtype=torch.float64, device="cpu") + 0.5) / num_heads
    return 1.0 - 1.0 / (lo * (hi / lo) ** t)


def initial_logits(num_heads: int, num_scans: int = 1, horizon: Sequence[float] = (4.0, 256.0)) -> torch.Tensor:
    """theta = logit(lambda) of `initial_decays`, repeated per scan: float64 [num_scans * num_heads]."""
    lam = initial_decays(num_heads, horizon)
    return (torch.log(lam) - torch.log1p(-lam)).repeat(num_scans)


@torch.no_grad()
def _write(param: torch.Tensor, value: torch.Tensor, copy_=None):
    if param.is_meta:
        return
    value = value.view_as(param).to(param.dtype)
    (copy_ or (lambda t, v: t.copy_(v)))(param, value)


def _at_least_f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


class DecayGate(nn.Linear):
    """The LION-S gate: x [B, L, C] -> logits [B, L, num_scans * H]; lambda = sigmoid(logit).

    A Linear whose bias starts at the logits of `initial_decays`, so each head starts at its own decay and the
    weights make it depend on the token; `init="paper"` starts the bias at 0 instead (the paper's code).
    """

    def __init__(self, dim: int, num_heads: int, num_scans: int = 1, horizon: Sequence[float] = (4.0, 256.0),
                 init: str = "default"):
        super().__init__(dim, num_scans * num_heads)
        self.num_heads, self.num_scans, self.horizon, self.init = num_heads, num_scans, tuple(horizon), init
        self.reset_bias()

    def reset_bias(self, copy_=None):
        if self.init == "paper":
            _write(self.bias, torch.zeros(self.num_heads * self.num_scans, dtype=torch.float64), copy_)
        else:
            _write(self.bias, initial_logits(self.num_heads, self.num_scans, self.horizon), copy_)


class Decay:
    """One kind of decay for a mixer with `num_heads` heads and `num_scans` scan orders.

    Options (each kind uses those that concern it): horizon (lo, hi) of the default initialisation
    (`initial_decays`); init "default" | "paper"; gate "sigmoid" | "one_minus_sigmoid", gate_eps, gate_detach,
    selective_mask "symmetric" | "paper_code", prefix_unit_decay (see LionAttention).
    """

    kind = ""
    param_names: tuple[str, ...] = ()

    def __init__(self, num_heads: int, num_scans: int = 1, *, horizon: Sequence[float] = (4.0, 256.0),
                 init: str = "default", gate: str = "sigmoid", gate_eps: float = 0.0, gate_detach: bool = False,
                 selective_mask: str = "symmetric", prefix_unit_decay: bool = False):
        for key, value, allowed in (("decay_init", init, DECAY_INITS), ("gate", gate, GATES),
                                    ("selective_mask", selective_mask, SELECTIVE_MASKS)):
            if value not in allowed:
                raise ValueError(f"LionAttention: {key}={value!r} is unknown; use one of {allowed}")
        if isinstance(gate_eps, bool) or not isinstance(gate_eps, (int, float)) or gate_eps < 0:
            raise ValueError(f"LionAttention: gate_eps must be a number >= 0, got {gate_eps!r}")
        self.num_heads, self.num_scans = num_heads, num_scans
        self.horizon = tuple(float(h) for h in horizon)
        initial_decays(num_heads, self.horizon)  # validate now, not at the first init
        self.init, self.gate, self.gate_eps, self.gate_detach = init, gate, float(gate_eps), bool(gate_detach)
        self.selective_mask, self.prefix_unit_decay = selective_mask, bool(prefix_unit_decay)

    def create(self, mixer: nn.Module, dim: int) -> None:
        """Register this decay's parameters on the mixer (under the names checkpoints use)."""

    @torch.no_grad()
    def reset(self, mixer: nn.Module, copy_=None, normal_=None) -> None:
        """(Re)initialise the parameters; `copy_` / `normal_` are Hugging Face's init-aware writers (or None)."""

    def log_decays(self, mixer: nn.Module, x: torch.Tensor, num_prefix_tokens: int = 0) -> list:
        """One log-decay per scan, in raster (input) order: None, [H] or [B, H, L]."""
        return [None] * self.num_scans

    def for_core(self, a, order):
        """The log-decay of one scan in that scan's order (`order` None: raster), as lion_attention takes it."""
        return a

    @property
    def needs_parts(self) -> bool:
        """True when the mixer must combine the core's parts itself (the authors' LION-S mask)."""
        return False


class NoDecay(Decay):
    kind = "none"


class HeadDecay(Decay):
    kind = "fixed"
    param_names = ("decay_logit",)

    def create(self, mixer, dim):
        mixer.decay_logit = nn.Parameter(torch.empty(self.num_scans, self.num_heads))

    @torch.no_grad()
    def reset(self, mixer, copy_=None, normal_=None):
        if self.init == "paper":
            if not mixer.decay_logit.is_meta:
                (normal_ or nn.init.normal_)(mixer.decay_logit, 0.0, 1.0)
        else:
            _write(mixer.decay_logit, initial_logits(self.num_heads, self.num_scans, self.horizon), copy_)

    def log_decays(self, mixer, x, num_prefix_tokens=0):
        return list(F.logsigmoid(_at_least_f32(mixer.decay_logit)).unbind(0))


class TokenDecay(Decay):
    kind = "selective"
    param_names = ("decay_proj",)

    def create(self, mixer, dim):
        mixer.decay_proj = DecayGate(dim, self.num_heads, self.num_scans, self.horizon, init=self.init)

    @torch.no_grad()
    def reset(self, mixer, copy_=None, normal_=None):
        mixer.decay_proj.reset_bias(copy_)

    def log_decays(self, mixer, x, num_prefix_tokens=0):
        """The gate is computed from x in float32 outside autocast (it is tiny: H outputs per token) and stays in
        the graph, so w and b train (unless gate_detach). `gate`, `gate_eps` and `prefix_unit_decay` (the first
        num_prefix_tokens tokens get log-decay 0) apply here."""
        B, L, _ = x.shape
        with torch.autocast(x.device.type, enabled=False):
            w, b = mixer.decay_proj.weight, mixer.decay_proj.bias
            logits = F.linear(_at_least_f32(x), _at_least_f32(w), _at_least_f32(b))
        z = logits if self.gate == "sigmoid" else -logits  # 1 - sigmoid(z) = sigmoid(-z)
        a = F.logsigmoid(z) if self.gate_eps == 0 else torch.log(torch.sigmoid(z) + self.gate_eps)
        if self.gate_detach:
            a = a.detach()
        a = a.view(B, L, self.num_scans, self.num_heads).permute(2, 0, 3, 1)  # [num_scans, B, H, L]
        n = min(int(num_prefix_tokens), L) if self.prefix_unit_decay else 0
        if n:
            a = torch.cat([torch.zeros_like(a[..., :n]), a[..., n:]], dim=-1)
        return list(a.unbind(0))  # num_scans x [B, H, L]

    def for_core(self, a, order):
        if order is not None:
            a = a.index_select(-1, order)
        return paper_code_log_decays(a) if self.selective_mask == "paper_code" else a

    @property
    def needs_parts(self) -> bool:
        return self.selective_mask == "paper_code"


DECAYS: dict[str, type[Decay]] = {cls.kind: cls for cls in (NoDecay, HeadDecay, TokenDecay)}
DECAY_PARAMETER_NAMES = tuple(n for cls in DECAYS.values() for n in cls.param_names)

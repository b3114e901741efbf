"""Long Range Arena models on the shared Encoder: one classifier for the five single-sequence tasks, a two-tower
model for retrieval.

    model = create_lra_model("listops", vocab_size=dm.vocab_size, attention="lion-s")
    logits = model(batch["input_ids"], batch["attention_mask"])                    # [B, num_classes]
    model = create_lra_model("retrieval", vocab_size=dm.vocab_size)
    logits = model(batch["input_ids_1"], batch["attention_mask_1"], batch["input_ids_2"], batch["attention_mask_2"])

Inputs follow DESIGN section 3: `input_ids [B, L]` long (tokens, bytes, or pixel values 0..255 for the image tasks)
and `attention_mask [B, L]` (True/1 = real token; right padding). Padding equals removal: pad tokens are ignored
by the mixer (docs/MATH.md section 1) and by mean pooling, and right padding leaves the positions of the real tokens unchanged.
"""
from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import nn

from lion.models.layers import LionAttention
from lion.models.registry import Encoder

INPUTS = ("tokens", "pixels")
POOLS = ("mean", "cls")
POS_EMBEDS = ("none", "learn", "sincos")

# Task presets: data shape (docs/MATH.md section 5 and the paper's Table C) and the default architecture. The architecture (dim 128, depth 4,
# 4 heads, MLP ratio 2, mean pooling, learned positions, dropout 0.1) is one small, fixed choice for every task, so
# LION variants and the softmax twin compare at equal size; override any of it through keyword arguments.
_ARCH = dict(dim=128, depth=4, num_heads=4, mlp_ratio=2.0, pool="mean", pos_embed="learn", dropout=0.1)
LRA_TASKS = {
    "listops": dict(input="tokens", seq_len=2000, num_classes=10),
    "text": dict(input="tokens", seq_len=4096, num_classes=2),
    "retrieval": dict(input="tokens", seq_len=4000, num_classes=2),
    "image": dict(input="pixels", seq_len=1024, num_classes=10, grid_size=(32, 32)),
    "pathfinder": dict(input="pixels", seq_len=1024, num_classes=2, grid_size=(32, 32)),
    "pathx": dict(input="pixels", seq_len=16384, num_classes=2, grid_size=(128, 128)),
}


def sincos_embedding(L: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed sinusoidal position embedding (Vaswani et al.): [L, dim]."""
    pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(L, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe.to(dtype)


class LRAClassifier(nn.Module):
    """Embedding -> shared Encoder -> pooling -> dropout -> linear head.

    Args:
        num_classes: output classes (0: no head, `forward` returns the pooled features [B, dim]).
        vocab_size: size of the token vocabulary (input="tokens"); take it from the data module.
        input: "tokens" (nn.Embedding) or "pixels" (a linear map of the intensity: long inputs are divided by
            `pixel_max`, float inputs are used as given).
        seq_len: longest sequence (the size of the learned position table).
        dim, depth, num_heads, mlp_ratio, attention, drop_path_rate: encoder (see `Encoder`).
        pool: "mean" (over real tokens) or "cls" (a class token prepended, read at the output).
        pos_embed: "learn", "sincos" (fixed) or "none".
        dropout: after the embedding, inside the blocks and before the head.
        grid_size: (h, w) of image tasks (the two-scan mixers scan this grid).
        pad_token_id: padding index of the token embedding.
        **attn_opts: mixer options (form, chunk_size, feature_map, normalize, ...).

    forward(input_ids [B, L], attention_mask [B, L] | None) -> logits [B, num_classes].
    """

    def __init__(self, num_classes: int, vocab_size: int | None = None, *, input: str = "tokens",
                 seq_len: int = 1024, dim: int = 128, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
                 attention: str = "lion-s", pool: str = "mean", pos_embed: str = "learn", dropout: float = 0.1,
                 drop_path_rate: float = 0.0, grid_size=None, pad_token_id: int = 0, pixel_max: float = 255.0,
                 **attn_opts):
        super().__init__()
        for key, value, allowed in (("input", input, INPUTS), ("pool", pool, POOLS), ("pos_embed", pos_embed,
                                                                                      POS_EMBEDS)):
            if value not in allowed:
                raise ValueError(f"LRAClassifier: {key}={value!r} is unknown; use one of {allowed}")
        if input == "tokens" and not vocab_size:
            raise ValueError("LRAClassifier: input='tokens' needs vocab_size (the data module's vocab_size)")
        self.input, self.pool, self.seq_len, self.pixel_max = input, pool, seq_len, float(pixel_max)
        self.grid_size = None if grid_size is None else tuple(int(s) for s in grid_size)
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.num_classes, self.num_features = num_classes, dim
        if input == "tokens":
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        else:
            self.embed = nn.Linear(1, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed_type = pos_embed
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, dim)) if pos_embed == "learn" else None
        self.embed_drop = nn.Dropout(dropout)
        self.encoder = Encoder(dim, depth, num_heads, attention, mlp_ratio=mlp_ratio, drop_rate=dropout,
                               drop_path_rate=drop_path_rate, **attn_opts)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
                if m.padding_idx is not None:
                    nn.init.zeros_(m.weight[m.padding_idx])
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, LionAttention):
                m.reset_decay_parameters()

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Change the form of every LION mixer (weights and outputs unchanged). Returns self."""
        self.encoder.set_form(form, chunk_size, backend)
        return self

    def tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> embeddings with positions [B, L, dim] (no class token)."""
        if input_ids.dim() != 2:
            raise ValueError(f"LRAClassifier: input_ids must be [B, L], got {tuple(input_ids.shape)}")
        L = input_ids.shape[1]
        if self.input == "tokens":
            x = self.embed(input_ids)
        else:
            v = input_ids.float() / self.pixel_max if not input_ids.is_floating_point() else input_ids
            x = self.embed(v[..., None].to(self.embed.weight.dtype))
        if self.pos_embed is not None:
            if L > self.seq_len:
                raise ValueError(f"LRAClassifier: sequence length {L} exceeds seq_len={self.seq_len} of the learned "
                                 "position table; build the model with a larger seq_len or truncate the input")
            x = x + self.pos_embed[:, :L]
        elif self.pos_embed_type == "sincos":
            x = x + sincos_embedding(L, x.shape[-1], x.device, x.dtype)
        return x

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Encoded tokens [B, prefix + L, dim] and the mask used ([B, prefix + L] or None)."""
        x = self.tokens(input_ids)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if attention_mask is not None:
                ones = torch.ones_like(attention_mask[:, :1])
                attention_mask = torch.cat([ones, attention_mask], dim=1)
        x = self.encoder(self.embed_drop(x), attention_mask, grid_size=self.grid_size,
                         num_prefix_tokens=self.num_prefix_tokens)
        return x, attention_mask

    def pool_features(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, L, dim] -> [B, dim]: the class token, or the mean over real tokens."""
        if self.pool == "cls":
            return x[:, 0]
        if attention_mask is None:
            return x.mean(dim=1)
        m = attention_mask.to(x.dtype)[..., None]
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features [B, dim]."""
        return self.pool_features(*self.forward_features(input_ids, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.head_drop(self.encode(input_ids, attention_mask)))


class LRARetrieval(nn.Module):
    """Two-tower retrieval: one shared encoder embeds both documents (u, v); [u, v, u*v, u-v] -> MLP -> logits.

    Args: num_classes (2), mlp_hidden (default: the encoder width), dropout; everything else goes to the shared
    `LRAClassifier` encoder (vocab_size, seq_len, dim, depth, attention, pool, ...).

    forward(input_ids_1, attention_mask_1, input_ids_2, attention_mask_2) -> logits [B, num_classes].
    """

    def __init__(self, num_classes: int = 2, mlp_hidden: int | None = None, dropout: float = 0.1, **encoder_kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.tower = LRAClassifier(0, dropout=dropout, **encoder_kwargs)
        d = self.tower.num_features
        hidden = mlp_hidden or d
        self.head = nn.Sequential(nn.Linear(4 * d, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        self.tower.set_form(form, chunk_size, backend)
        return self

    def forward(self, input_ids_1, attention_mask_1=None, input_ids_2=None, attention_mask_2=None):
        if input_ids_2 is None:
            raise ValueError("LRARetrieval: pass both documents (input_ids_1 and input_ids_2)")
        if input_ids_1.shape == input_ids_2.shape:  # one pass over both documents
            mask = None
            if attention_mask_1 is not None or attention_mask_2 is not None:
                mask = torch.cat([torch.ones_like(ids, dtype=torch.bool) if m is None else m.bool() for ids, m in
                                  ((input_ids_1, attention_mask_1), (input_ids_2, attention_mask_2))])
            u, v = self.tower.encode(torch.cat([input_ids_1, input_ids_2]), mask).chunk(2)
        else:
            u, v = self.tower.encode(input_ids_1, attention_mask_1), self.tower.encode(input_ids_2, attention_mask_2)
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))


def create_lra_model(task: str | None = None, **kwargs) -> nn.Module:
    """Build the LRA model of `task` ("listops", "text", "retrieval", "image", "pathfinder", "pathx"), or from
    keyword arguments alone (then `num_classes` is required; `retrieval=True` builds the two-tower model).

    The task fixes input type, seq_len, num_classes and grid_size; the architecture defaults are `_ARCH`; every
    keyword argument overrides both (e.g. attention="softmax" for the twin, seq_len=..., dim=..., vocab_size=...).
    """
    if task is not None:
        key = str(task).lower().replace("-", "").replace("_", "")
        if key not in LRA_TASKS:
            raise ValueError(f"create_lra_model: unknown task {task!r}; use one of {sorted(LRA_TASKS)}")
        opts = {**_ARCH, **LRA_TASKS[key], **kwargs}
        retrieval = kwargs.pop("retrieval", key == "retrieval")
        opts.pop("retrieval", None)
    else:
        if "num_classes" not in kwargs:
            raise ValueError("create_lra_model: give a task name or num_classes=...")
        opts = {**_ARCH, **kwargs}
        retrieval = opts.pop("retrieval", False)
    if retrieval:
        return LRARetrieval(**opts)
    return LRAClassifier(**opts)

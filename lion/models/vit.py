"""LION Vision Transformer, registered in timm.

    import lion, timm
    model = timm.create_model("lion_s_small_patch16_224", num_classes=10, form="chunk", chunk_size=64)
    model.set_form("recurrent")          # same weights, same logits

Registered names (built through timm's `build_model_with_cfg`, so every timm utility works on them):

    lion_{lit,d,s}_{tiny,small,base}_patch16_224      LION-LIT, LION-D, LION-S
    lion_{d,s}_ms_{tiny,small,base}_patch16_224       LION-D and LION-S natural (two snake scans)
    softmax_vit_{tiny,small,base}_patch16_224         the softmax twin (same options, SDPA attention)

Sizes (docs/MATH.md section 5): tiny 192 x 3 heads, small 384 x 6, base 768 x 12; depth 12, MLP ratio 4, qkv bias, LayerNorm 1e-6.
Defaults: class token, mean pooling over the patch tokens, no position embedding (`pos_embed="learn"` adds
timm-style learned absolute position embeddings, resampled to any input size). `compat="paper_code"` computes what
the authors' vision code computes (their LION-S mask, detached gate, +1e-6 in the denominator, mean over all tokens
with the class token, their init; docs/COMPAT.md), and `pretrained=True, pretrained_cfg_overlay=dict(file=...)`
loads a weights file such as one written by scripts/convert_paper_checkpoint.py.
Any image size and channel count work: the patch grid, and with it the scan orders of the two-scan mixers, is taken
from the input. Parameter names match timm's VisionTransformer, so `softmax_vit_*` with `pos_embed="learn",
global_pool="token"` loads timm ViT / DeiT weights.
"""
from __future__ import annotations

from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from lion.attentions import ATTENTIONS, canonical_name, vit_model_name
from lion.models.compat import VISION_PAPER_CODE, check_compat
from lion.models.layers import LionAttention
from lion.models.registry import Encoder, decay_parameter_names

POOLS = ("", "avg", "avg_all", "token")
POS_EMBEDS = ("none", "learn")


class LionViT(Encoder):
    """Vision Transformer whose token mixer comes from the attention registry (LION or softmax).

    It is an `Encoder` (the shared blocks and final norm, as `blocks` and `norm`) with timm's patch embedding,
    optional class token and position embedding, and a classification head.

    Args:
        img_size: default input size (sets the position-embedding grid and `pretrained_cfg`; any size divisible by
            the patch size runs). patch_size, in_chans: patch embedding. num_classes: 0 for no head.
        global_pool: "avg" (mean of the patch tokens, the paper's default), "avg_all" (mean of all tokens, the class
            token included: the authors' code), "token" (class token) or "" (none). Default "avg" ("avg_all" with
            compat="paper_code").
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer sizes.
        class_token: prepend a learned class token (kept first in both scan orders of the two-scan mixers).
        pos_embed: "none" (the paper's default) or "learn".
        drop_rate: dropout before the head; pos_drop_rate: after the embeddings; proj_drop_rate: after the mixer
            and in the MLP; attn_drop_rate: softmax-attention dropout; drop_path_rate: stochastic depth.
        attention: registry name ("lion-lit", "lion-d", "lion-s", "lion-d-ms", "lion-s-ms", "softmax").
        compat: None or "paper_code": compute what the authors' vision code computes (their LION-S mask and
            class-token rule, the detached gate written 1 - sigmoid, the 1e-6 in the denominator, mean pooling over
            all tokens, their initialisations; see `lion.models.compat`). It fills in only the options not given.
        decay_init: "default" or "paper" (LION-D logits ~ N(0, 1), LION-S gate bias 0); a mixer option.
        **attn_opts: mixer options: form, chunk_size, backend, feature_map, normalize, scale, attn_norm, ...

    forward(x [B, in_chans, H, W]) -> logits [B, num_classes]; forward_features -> tokens [B, prefix + h*w, C].
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool=None,
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, class_token=True,
                 pos_embed="none", drop_rate=0.0, pos_drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, attention="lion-s", norm_layer=None, act_layer=None, compat=None, **attn_opts):
        check_compat(compat, "LionViT")
        if compat == "paper_code":
            attn_opts = {**VISION_PAPER_CODE, **attn_opts}
        if global_pool is None:
            global_pool = "avg_all" if compat == "paper_code" else "avg"
        if global_pool not in POOLS:
            raise ValueError(f"LionViT: global_pool={global_pool!r} is unknown; use one of {POOLS}")
        if global_pool == "token" and not class_token:
            raise ValueError("LionViT: global_pool='token' needs class_token=True")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"LionViT: pos_embed={pos_embed!r} is unknown; use one of {POS_EMBEDS}")
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        super().__init__(embed_dim, depth, num_heads, attention, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                         drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                         norm_layer=norm_layer, act_layer=act_layer, **attn_opts)
        self.num_classes, self.global_pool, self.in_chans, self.compat = num_classes, global_pool, in_chans, compat
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, output_fmt="NHWC",
                                      strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        num_pos = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim)) if pos_embed == "learn" else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        self.init_weights()

    def init_weights(self):
        """timm's ViT init (truncated normal 0.02 for linear layers and position embeddings, zero biases), then
        the decay initialisation of every LION mixer; with compat="paper_code" the class token is drawn as in the
        authors' code (truncated normal 0.02)."""
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            if self.compat == "paper_code":
                trunc_normal_(self.cls_token, std=0.02)
            else:
                nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_linear)
        for m in self.modules():
            if isinstance(m, LionAttention):
                m.reset_decay_parameters()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory keeps out of weight decay (it already skips 1-D ones)."""
        return {"cls_token", "pos_embed"} | {n for n in decay_parameter_names(self) if n.endswith("decay_logit")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed", blocks=[(r"^blocks\.(\d+)", None),
                                                                        (r"^norm", (99999,))])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        if global_pool is not None:
            if global_pool not in POOLS or (global_pool == "token" and self.cls_token is None):
                raise ValueError(f"LionViT.reset_classifier: global_pool={global_pool!r} is not available; use one "
                                 f"of {POOLS} ('token' needs a class token)")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def embed(self, x: torch.Tensor):
        """Patch embedding, class token, position embedding. Returns tokens [B, prefix + h*w, C] and (h, w)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"LionViT: expected images [B, {self.in_chans}, H, W], got {tuple(x.shape)}; build the "
                             f"model with in_chans={x.shape[1] if x.dim() == 4 else '...'} for this input")
        x = self.patch_embed(x)  # [B, h, w, C]
        B, h, w, C = x.shape
        x = x.reshape(B, h * w, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if (h, w) != tuple(self.patch_embed.grid_size):
                pos = resample_abs_pos_embed(pos, (h, w), self.patch_embed.grid_size, self.num_prefix_tokens)
            x = x + pos
        return self.pos_drop(x), (h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self.embed(x)
        return self.norm(self.forward_blocks(x, grid_size=grid, num_prefix_tokens=self.num_prefix_tokens))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "avg_all":
            x = x.mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's intermediate-feature API (what `features_only=True` builds on): the outputs of the blocks in
        `indices` (an int n: the last n blocks; None: all), patch tokens only, as [B, C, h, w] ("NCHW") or
        [B, h*w, C] ("NLC"); `norm` applies the final norm to each; with `return_prefix_tokens` each entry is
        (patch tokens, class token [B, 1, C]). Returns (forward_features(x), intermediates), or the intermediates
        alone with `intermediates_only`."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"LionViT.forward_intermediates: output_fmt={output_fmt!r}; use 'NCHW' or 'NLC'")
        take, max_index = _take_indices(len(self.blocks), indices)
        x, (h, w) = self.embed(x)
        n = self.num_prefix_tokens
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        out = []
        for i, blk in enumerate(blocks):
            x = self.run_block(blk, x, None, (h, w), n)
            if i in take:
                out.append(self.norm(x) if norm else x)
        prefix = [y[:, :n] for y in out]
        out = [y[:, n:] for y in out]
        if output_fmt == "NCHW":
            out = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in out]
        if return_prefix_tokens and n:
            out = list(zip(out, prefix))
        if intermediates_only:
            return out
        return self.norm(x), out

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of `indices` (and the norm / head); returns the kept indices (timm API)."""
        take, max_index = _take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _take_indices(depth: int, indices) -> tuple[list[int], int]:
    """Block indices to return (timm's convention: None = all, an int n = the last n, a list = those, negative
    from the end) and the largest of them."""
    if indices is None:
        take = list(range(depth))
    elif isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"LionViT: indices (out_indices with features_only) = {indices} asks for the last "
                             f"{indices} of {depth} blocks")
        take = list(range(depth - indices, depth))
    else:
        take = [i + depth if i < 0 else i for i in indices]
        if not take or any(not 0 <= i < depth for i in take):
            raise ValueError(f"LionViT: indices={list(indices)} must lie in [-{depth}, {depth - 1}] ({depth} blocks)")
    return take, max(take)


def _init_linear(m: nn.Module):
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- timm registration
SIZES = {"tiny": dict(embed_dim=192, depth=12, num_heads=3), "small": dict(embed_dim=384, depth=12, num_heads=6),
         "base": dict(embed_dim=768, depth=12, num_heads=12)}
# every (attention, size) of the registry (lion/attentions.py) is a timm model: <prefix>_<size>_patch16_224
MODELS = {vit_model_name(a, size): (a, size) for a in ATTENTIONS for size in SIZES}
MODEL_NAMES = list(MODELS)


def _cfg(**kwargs) -> dict:
    """Input and evaluation settings of the DeiT recipe (docs/MATH.md section 5); no pretrained weights are published."""
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875,
                interpolation="bicubic", fixed_input_size=False, mean=IMAGENET_DEFAULT_MEAN,
                std=IMAGENET_DEFAULT_STD, first_conv="patch_embed.proj", classifier="head", **kwargs)


default_cfgs = generate_default_cfgs({name: _cfg() for name in MODEL_NAMES})


def create_vit(attention: str = "lion-s", size: str = "tiny", pretrained: bool = False, **kwargs) -> LionViT:
    """The LION ViT (or its softmax twin) of `attention` and `size` with timm's machinery (pretrained_cfg,
    features_only, ...): what `timm.create_model("<prefix>_<size>_patch16_224", **kwargs)` builds, without going
    through the name. kwargs override the size (embed_dim, depth, ...) and set any LionViT option."""
    attention = canonical_name(attention)
    if size not in SIZES:
        raise ValueError(f"LionViT: size={size!r} is unknown; use one of {tuple(SIZES)}")
    name = vit_model_name(attention, size)
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("state_dict")):
        raise ValueError(f"{name}: no pretrained weights are published; use pretrained=False, or pretrained=True "
                         "with pretrained_cfg_overlay=dict(file='weights.safetensors') for a local file (e.g. one "
                         "written by scripts/convert_paper_checkpoint.py), or checkpoint_path=... in "
                         "timm.create_model to load your own")
    args = dict(patch_size=16, img_size=224, attention=attention, **SIZES[size])
    out_indices = kwargs.pop("out_indices", 3)  # features_only=True: the last 3 blocks (timm's ViT default)
    return build_model_with_cfg(LionViT, name, pretrained, feature_cfg=dict(out_indices=out_indices,
                                                                            feature_cls="getter"),
                                **{**args, **kwargs})


def _entrypoint(name: str, attention: str, size: str):
    def fn(pretrained: bool = False, **kwargs) -> LionViT:
        return create_vit(attention, size, pretrained, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"{name}: LionViT, attention {attention!r}, size {size!r}."
    return fn


for _name, (_attention, _size) in MODELS.items():
    globals()[_name] = register_model(_entrypoint(_name, _attention, _size))

"""The attention registry: every token mixer the framework builds, in one table (no torch, no timm: config checks,
tables and scripts read it without loading the models).

    ATTENTIONS["lion-s"]  ->  Attention(name="lion-s", decay="selective", num_scans=1, timm_prefix="lion_s",
                                        label="LION-S")

Everything else derives from it: the mixers `lion.models.registry.build_attention` builds, the timm model names
(`vit_model_name("lion-d-ms", "small")` -> "lion_d_ms_small_patch16_224"), the allowed values of `model.attention`,
the rows of the tables. A new attention is one entry here (and, for a new decay, one class in
`lion/models/decays.py`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attention:
    name: str               # what configs and users write: "lion-s"
    decay: str | None       # a key of lion.models.decays.DECAYS: "none", "fixed" (per head), "selective" (per token); None: softmax
    num_scans: int          # 2: the two-scan "natural" image variants
    timm_prefix: str        # timm model names: f"{timm_prefix}_{size}_patch16_224"
    label: str              # row label in tables and plots

    @property
    def is_lion(self) -> bool:
        return self.decay is not None


ATTENTIONS: dict[str, Attention] = {a.name: a for a in (
    Attention("lion-lit", "none", 1, "lion_lit", "LION-LIT"),
    Attention("lion-d", "fixed", 1, "lion_d", "LION-D"),
    Attention("lion-s", "selective", 1, "lion_s", "LION-S"),
    Attention("lion-d-ms", "fixed", 2, "lion_d_ms", "LION-D♮"),
    Attention("lion-s-ms", "selective", 2, "lion_s_ms", "LION-S♮"),
    Attention("softmax", None, 1, "softmax_vit", "Softmax"),
)}
VIT_SIZES = ("tiny", "small", "base")


def canonical_name(name: str) -> str:
    """Accept 'lion_s', 'LION-S', 'lion-s-ms', ...; return the registry key or raise naming the allowed ones."""
    key = str(name).lower().replace("_", "-")
    if key not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; use one of {sorted(ATTENTIONS)}")
    return key


def vit_model_name(attention: str, size: str, patch: int = 16, res: int = 224) -> str:
    """The timm name of a registered ViT: vit_model_name("lion-d-ms", "small") -> "lion_d_ms_small_patch16_224"."""
    return f"{ATTENTIONS[canonical_name(attention)].timm_prefix}_{size}_patch{patch}_{res}"

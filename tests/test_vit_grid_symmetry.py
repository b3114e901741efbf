"""What a LION ViT without position embedding can tell apart (the proxy suite's MNIST setting: no position
embedding for the LION rows, class token, mean pooling): the decay masks are its only positions, and their symmetries
are the model's. Moving whole patches (their content unchanged) by a symmetry of every mask leaves the output equal.

- LION-LIT: every rearrangement (no mask at all).
- LION-D♮ (two snake scans, the same decays in both at initialisation): the transpose of the patch grid, exactly,
  because the column snake is the row snake of the transposed grid and the two masks are summed. LION-D (one raster
  scan) is not: it sees the transpose. docs/REPRODUCE.md uses this to explain the two-scan rows of the proxy suite.
"""
from __future__ import annotations

import pytest
import timm
import torch

import lion  # noqa: F401  (registers the models with timm)

G, P = 4, 4  # a 4 x 4 grid of 4 px patches


def move_patches(x: torch.Tensor, where) -> torch.Tensor:
    """new patch (r, c) = old patch where(r, c), pixels inside each patch unchanged."""
    y = torch.empty_like(x)
    for r in range(G):
        for c in range(G):
            rr, cc = where(r, c)
            y[..., r * P:(r + 1) * P, c * P:(c + 1) * P] = x[..., rr * P:(rr + 1) * P, cc * P:(cc + 1) * P]
    return y


def vit(name: str):
    torch.manual_seed(0)
    return timm.create_model(f"{name}_tiny_patch16_224", img_size=G * P, patch_size=P, in_chans=1, num_classes=5,
                             embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, pos_embed="none", global_pool="avg",
                             class_token=True).double().eval()


def change(name: str, where) -> float:
    m = vit(name)
    x = torch.rand(3, 1, G * P, G * P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x)
        return ((m(move_patches(x, where)) - y).abs().max() / y.abs().max()).item()


TRANSPOSE = lambda r, c: (c, r)  # noqa: E731
SHIFT = lambda r, c: (r, (c + 1) % G)  # noqa: E731


@pytest.mark.parametrize("where", [TRANSPOSE, SHIFT], ids=["transpose", "shift"])
def test_lit_sees_no_arrangement(where):
    assert change("lion_lit", where) < 1e-12


def test_two_scan_d_is_blind_to_the_transpose_and_one_scan_d_is_not():
    assert change("lion_d_ms", TRANSPOSE) < 1e-12
    assert change("lion_d", TRANSPOSE) > 1e-6
    assert change("lion_d_ms", SHIFT) > 1e-6  # it does see other rearrangements

"""Inputs, runner, float64 reference and tolerance check shared by the Triton test files (test_triton.py: chunk
kernels; test_triton_tile.py: tile kernels). Importing this module does not import the kernels."""
import pytest
import torch

from lion.ops.naive import lion_attention_parallel

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
DECAYS = ("none", "head", "token")
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def make_inputs(B, H, L, D=16, Dv=16, decay="token", dtype=torch.float64, seed=0, low=-2.0, decay_dtype=None):
    """Positive q, k (as after the LION feature maps), normal v, log-decays in [low, 0] (in decay_dtype, default
    dtype); leaves with grad on DEV."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    k = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64)
    a = {"none": None, "head": torch.rand(H, generator=g, dtype=torch.float64) * low,
         "token": torch.rand(B, H, L, generator=g, dtype=torch.float64) * low}[decay]
    out = [t.to(DEV, dtype).requires_grad_() for t in (q, k, v)]
    return out + [None if a is None else a.to(DEV, decay_dtype or dtype).requires_grad_()]


def padding_mask(where: str):
    """[2, 37] attention mask (True = real token) with pads on the "left", "right" or "inside" (several runs)."""
    B, L = 2, 37
    mask = torch.ones(B, L, dtype=torch.bool)
    if where == "left":
        mask[0, :5] = False
        mask[1, :20] = False
    elif where == "right":
        mask[0, 30:] = False
        mask[1, 16:] = False
    else:
        mask[0, 10:14] = False
        mask[1, 1:2] = False
        mask[1, 20:33] = False
    mask = mask.to(DEV)
    return mask


def run(fn, inputs, mask=None, parts=False, **kw):
    """Outputs and gradients (q, k, v, log_decay) of a fixed random projection of the real positions (num and den
    when parts), in float64."""
    out = fn(*inputs, attention_mask=mask, return_parts=parts, **kw)
    outs = out if parts else (out,)
    B, L = inputs[0].shape[0], inputs[0].shape[2]
    m = (torch.ones(B, L) if mask is None else mask.cpu()).to(torch.float64)[:, None, :]
    g = torch.Generator().manual_seed(1)
    loss = 0
    for o in outs:
        w = torch.randn(o.shape, generator=g, dtype=torch.float64)
        w = (w * (m[..., None] if o.dim() == 4 else m)).to(o.device)
        loss = loss + (o.double() * w).sum()
    grads = torch.autograd.grad(loss, [t for t in inputs if t is not None])
    m = m.to(outs[0].device)
    return [(o.double() * (m[..., None] if o.dim() == 4 else m)).detach() for o in outs] + [x.double() for x in grads]


def reference(inputs, mask=None, parts=False, **kw):
    """run() of the float64 parallel form on the same values (kernel-only options such as chunk_size dropped)."""
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    kw.pop("chunk_size", None)
    return run(lion_attention_parallel, leaves, mask=mask, parts=parts, **kw)


def assert_close(got, want, rtol):
    """Each tensor within rtol of the reference, relative to the reference's largest entry."""
    assert len(got) == len(want)
    for i, (x, y) in enumerate(zip(got, want)):
        assert torch.isfinite(x).all(), f"tensor {i} has NaN/Inf"
        err = (x.cpu() - y.cpu()).abs().max().item()
        scale = y.abs().max().item() + 1e-30
        assert err <= rtol * scale + 1e-12, f"tensor {i}: max error {err:.3e} vs scale {scale:.3e}"


def rel_errors(got, want):
    """Relative Frobenius error of each tensor."""
    return [((x.cpu() - y.cpu()).norm() / y.cpu().norm().clamp_min(1e-30)).item() for x, y in zip(got, want)]

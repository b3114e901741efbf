"""The fused Triton kernels against the float64 parallel form (lion.ops.naive), forward and gradients.

On the CPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py before anything imports them), so shapes are
tiny; the same tests run on a GPU, plus the @pytest.mark.gpu ones at real sizes. The Triton interpreter truncates
fp32 -> bf16 conversions and mis-multiplies bf16 in tl.dot; the kernels emulate the GPU's rounding there
(kernels._round, DOT = 2), so half-precision tolerances mean the same thing on both.
"""
import os

import pytest
import torch

triton = pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not set", allow_module_level=True)

from lion.ops import lion_attention  # noqa: E402
from lion.ops.triton import MAX_HEAD_DIM, TUNING, lion_attention_triton  # noqa: E402
from triton_cases import DECAYS, DEV, assert_close, gpu, make_inputs, padding_mask, reference, run  # noqa: E402


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("L", [1, 17, 40])
def test_float64_matches_parallel(decay, normalize, L):
    """Exact arithmetic check: every decay type, both modes, L = 1, L mod C = 1, several chunks."""
    inputs = make_inputs(2, 2, L, decay=decay)
    kw = dict(normalize=normalize, chunk_size=16)
    assert_close(run(lion_attention_triton, inputs, **kw), reference(inputs, **kw), 1e-10)


@pytest.mark.parametrize("decay", DECAYS)
def test_float32(decay):
    inputs = make_inputs(1, 2, 50, D=32, Dv=16, decay=decay, dtype=torch.float32)
    assert_close(run(lion_attention_triton, inputs, chunk_size=16), reference(inputs), 2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("decay", ["none", "token"])
def test_half_precision(dtype, decay):
    """bf16 / fp16 inputs: fp32 accumulation, output in the input dtype, error at the level of one rounding."""
    inputs = make_inputs(1, 2, 70, D=32, Dv=32, decay=decay, dtype=dtype)
    y = lion_attention_triton(*inputs, chunk_size=32)
    assert y.dtype == dtype
    rtol = 3e-2 if dtype == torch.bfloat16 else 4e-3
    assert_close(run(lion_attention_triton, inputs, chunk_size=32), reference(inputs), rtol)


def test_bf16_peaked_attention_no_cancellation_loss():
    """Strong decays make the mask nearly the identity: y_i ~ v_i and dq, dk are small differences. The kernel must
    stay within 3x the error of the PyTorch path (fp32 inside) on the same bf16 inputs: it sums the same rounded
    weights it multiplies with, and saves y's rounding residual for the backward (without either: 9x on dq)."""
    inputs = make_inputs(1, 2, 70, D=32, Dv=32, decay="token", dtype=torch.bfloat16, low=-20.0, seed=5)
    inputs[3] = inputs[3].detach().float().requires_grad_()
    want = reference(inputs)

    def rel(got):
        return [((x.cpu() - y.cpu()).norm() / y.cpu().norm()).item() for x, y in zip(got, want)]
    err = rel(run(lion_attention_triton, inputs, chunk_size=32))
    err_torch = rel(run(lambda *t, **kw: lion_attention(*t, backend="torch", form="chunk", **kw), inputs))
    for i, (e, e_t) in enumerate(zip(err, err_torch)):
        assert e <= 3 * e_t + 1e-4, f"tensor {i}: {e:.2e} vs PyTorch path {e_t:.2e}"


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("where", ["left", "right", "inside"])
def test_padding_is_removal(decay, where):
    """Real positions match the reference with padding (pad keys, values and decays removed); pads stay finite."""
    B, L = 2, 37
    mask = padding_mask(where)
    inputs = make_inputs(B, 2, L, decay=decay)
    got = run(lion_attention_triton, inputs, mask=mask, chunk_size=16)
    assert_close(got, reference(inputs, mask=mask), 1e-10)
    assert torch.isfinite(lion_attention_triton(*inputs, attention_mask=mask, chunk_size=16)).all()


def test_padding_equals_shorter_sequence():
    """A right-padded sequence gives, at its real tokens, what the unpadded sequence gives (forward and grads)."""
    q, k, v, a = make_inputs(1, 2, 29, decay="token")
    mask = torch.zeros(1, 29, dtype=torch.bool, device=DEV)
    mask[:, :21] = True
    y = lion_attention_triton(q, k, v, a, attention_mask=mask, chunk_size=16)
    y_short = lion_attention_triton(q[:, :, :21], k[:, :, :21], v[:, :, :21], a[:, :, :21], chunk_size=16)
    torch.testing.assert_close(y[:, :, :21], y_short, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("decay", DECAYS)
def test_return_parts(decay):
    """(num, den) before the division, float32 for float32 inputs; gradients flow through both."""
    inputs = make_inputs(2, 1, 45, decay=decay)
    assert_close(run(lion_attention_triton, inputs, parts=True, chunk_size=16), reference(inputs, parts=True), 1e-10)
    num, den = lion_attention_triton(*[None if t is None else t.float() for t in inputs], return_parts=True)
    assert num.dtype == den.dtype == torch.float32 and den.shape == (2, 1, 45)


def test_mixed_dtypes_are_a_clear_error():
    """q, k, v in different dtypes stop with one TypeError (no silent cast); the log-decays may keep their own
    floating dtype (float32 decays with bf16 q, k, v, as a model's parameters under autocast)."""
    q, k, v, a = make_inputs(1, 2, 20, decay="token", dtype=torch.float32)
    with pytest.raises(TypeError, match=r"q, k and v must have one dtype, got q torch\.float32, k torch\.float64"):
        lion_attention_triton(q, k.double(), v.bfloat16(), a, chunk_size=16)
    y = lion_attention_triton(q.bfloat16(), k.bfloat16(), v.bfloat16(), a, chunk_size=16)
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("D,Dv", [(16, 16), (32, 32), (64, 64), (16, 48), (8, 24), (128, 128)])
def test_head_dims(D, Dv):
    inputs = make_inputs(1, 1, 21, D=D, Dv=Dv, decay="token")
    assert_close(run(lion_attention_triton, inputs, chunk_size=16), reference(inputs), 1e-10)


@pytest.mark.parametrize("chunk_size", [1, 16, 32, 64, 1000])
def test_chunk_size_does_not_change_results(chunk_size):
    """chunk_size is a tuning knob (rounded to a power of two in [16, 128]); L = 33 is L mod 32 = 1."""
    inputs = make_inputs(1, 2, 33, decay="token")
    assert_close(run(lion_attention_triton, inputs, chunk_size=chunk_size), reference(inputs), 1e-10)


def test_strided_inputs():
    """q, k, v as views of a [B, L, 3, H, D] projection (no copies), as attention layers produce them."""
    x = torch.rand(2, 35, 3, 3, 16, dtype=torch.float64, device=DEV)
    q, k, v = (x[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))
    a = (-torch.rand(2, 3, 35, dtype=torch.float64, device=DEV)).requires_grad_()
    assert not q.is_contiguous()
    inputs = [q, k, v, a]
    assert_close(run(lion_attention_triton, inputs, chunk_size=16), reference(inputs), 1e-10)


def test_split_launch_and_value_blocks():
    """The two-launch mode and the forward split over value columns (several programs per head) agree too."""
    inputs = make_inputs(1, 2, 40, D=16, Dv=40, decay="token")
    want = reference(inputs)
    old = dict(TUNING)
    try:
        TUNING.update(split=True, fwd_block_v=16, bwd_chunk=16)
        got = run(lion_attention_triton, inputs, chunk_size=16)
    finally:
        TUNING.clear()
        TUNING.update(old)
    assert_close(got, want, 1e-10)


def test_strong_decay_is_finite():
    """Log-decays down to -20 per token (lambda ~ 2e-9): no overflow, no NaN, still the reference."""
    inputs = make_inputs(1, 2, 48, decay="token", low=-20.0)
    assert_close(run(lion_attention_triton, inputs, chunk_size=16), reference(inputs), 1e-9)


def test_dispatch_backend_triton():
    """lion.ops.lion_attention(backend="triton") reaches these kernels with the same semantics."""
    inputs = make_inputs(1, 2, 20, decay="head")
    got = run(lambda *t, **kw: lion_attention(*t, backend="triton", chunk_size=16, **kw), inputs)
    assert_close(got, reference(inputs), 1e-10)


def test_clear_errors():
    q, k, v, a = make_inputs(1, 2, 8, D=MAX_HEAD_DIM + 1, decay="token")
    with pytest.raises(ValueError, match="head dims up to 128"):
        lion_attention_triton(q, k, v, a)
    q, k, v, a = make_inputs(1, 2, 8, decay="token")
    with pytest.raises(TypeError, match="k must be a floating-point tensor, got torch.int32"):
        lion_attention_triton(q, k.int(), v, a)
    with pytest.raises(ValueError, match="log_decay"):
        lion_attention_triton(q, k, v, a[0])
    with pytest.raises(ValueError, match="attention_mask"):
        lion_attention_triton(q, k, v, a, attention_mask=torch.ones(1, 9, dtype=torch.bool))


def test_torch_compile_fullgraph():
    """A LION-S style layer around the kernel compiles with fullgraph=True (no graph break) and matches eager."""
    torch.manual_seed(0)
    B, L, H, D = 2, 24, 2, 16
    proj = torch.nn.Linear(H * D, 3 * H * D + H, dtype=torch.float64).to(DEV)

    def layer(x):
        qkv, gate = proj(x).split([3 * H * D, H], dim=-1)
        q, k, v = qkv.view(B, L, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
        a = torch.nn.functional.logsigmoid(gate).transpose(1, 2)  # [B, H, L]
        return lion_attention_triton(q, k, v, a, chunk_size=16).transpose(1, 2).reshape(B, L, H * D)

    x = torch.randn(B, L, H * D, dtype=torch.float64, device=DEV, requires_grad=True)
    explain = torch._dynamo.explain(layer)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager" if DEV == "cpu" else "inductor")
    y_c = compiled(x)
    (gx_c,) = torch.autograd.grad(y_c.square().sum(), x)
    y_e = layer(x)
    (gx_e,) = torch.autograd.grad(y_e.square().sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)


# ---------------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("L", [197, 1000, 4096])
def test_gpu_bf16_against_float64(decay, L):
    """Real sizes in bf16 (chunk 64, D = 64): output and gradients within bf16 tolerance of float64 (relative
    Frobenius error < 2e-2; scripts/bench_attention.py --accuracy compares with SDPA's error for N1)."""
    inputs = make_inputs(2, 4, L, D=64, Dv=64, decay=decay, dtype=torch.bfloat16, low=-1.0)
    got, want = run(lion_attention_triton, inputs), reference(inputs)
    for x, y in zip(got, want):
        assert torch.isfinite(x).all()
        assert ((x - y).norm() / y.norm()).item() < 2e-2


@pytest.mark.gpu
@gpu
def test_gpu_strong_decay_long_sequence_bf16():
    """N1: log-decays in [-20, 0], L = 16384, bf16: finite outputs and gradients."""
    q, k, v, a = make_inputs(1, 2, 16384, D=64, Dv=64, decay="token", dtype=torch.bfloat16, low=-20.0)
    y = lion_attention_triton(q, k, v, a)
    grads = torch.autograd.grad(y.float().square().sum(), (q, k, v, a))
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)


def test_known_interpreter_break_is_named():
    from lion.ops.triton.ops import interpreter_problem
    assert "numpy<2.4" in interpreter_problem("3.6.0", "2.4.0")
    assert interpreter_problem("3.6.0", "2.3.5") is None
    assert interpreter_problem("3.7.1", "2.4.6") is None and interpreter_problem("3.10.0", "2.4.6") is None

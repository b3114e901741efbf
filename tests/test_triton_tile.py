"""The parallel-tile Triton kernels (lion/ops/triton/tile.py) against the float64 parallel form, forward and
gradients, and the measured choice between them and the chunk kernels (ops.choose_kernel).

On the CPU they run under TRITON_INTERPRET=1 (conftest.py), so shapes are tiny. TUNING["short_kernel"] forces a
kernel family per test; "auto" never times anything in the interpreter (it takes the chunk kernels).
"""
import logging
import os

import pytest
import torch

triton = pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not set", allow_module_level=True)

from lion.ops.naive import lion_attention_parallel  # noqa: E402
from lion.ops.triton import TUNING, lion_attention_triton  # noqa: E402
from lion.ops.triton import ops  # noqa: E402
from triton_cases import DECAYS, DEV, assert_close, gpu, padding_mask, reference, rel_errors, run  # noqa: E402
from triton_cases import make_inputs as _make_inputs  # noqa: E402


def make_inputs(*args, dtype=torch.float64, **kw):
    """triton_cases.make_inputs with the log-decays in float32 for half-precision q, k, v (as a model's decay
    parameters under autocast)."""
    return _make_inputs(*args, dtype=dtype, decay_dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                        **kw)


@pytest.fixture
def kernel():
    """Set TUNING["short_kernel"] (and optionally block sizes) for one test, restore afterwards."""
    old = dict(TUNING)
    ops._CHOICES.clear()

    def use(name, **tune):
        TUNING.update(short_kernel=name, **tune)
    yield use
    TUNING.clear()
    TUNING.update(old)
    ops._CHOICES.clear()


def tile(*a, **kw):
    old = TUNING["short_kernel"]
    TUNING["short_kernel"] = "tile"
    try:
        return lion_attention_triton(*a, **kw)
    finally:
        TUNING["short_kernel"] = old


# ------------------------------------------------------------------------------------------- tile vs float64

@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("L", [1, 17, 64, 100])
def test_float64_matches_parallel(kernel, decay, normalize, L):
    """B = H = 1; L = 1, one partial block, exactly one block, several blocks with a partial last one; blocks
    (32, 16) so that L = 100 has right, left and diagonal tiles with BN < BM."""
    kernel("tile", tile_fwd_blocks=(32, 16), tile_bwd_blocks=(32, 16))
    inputs = make_inputs(1, 1, L, decay=decay)
    kw = dict(normalize=normalize)
    assert_close(run(lion_attention_triton, inputs, **kw), reference(inputs, **kw), 1e-10)


@pytest.mark.parametrize("decay", DECAYS)
def test_batch_and_heads_default_blocks(kernel, decay):
    """B = 2, H = 3 (programs index heads and blocks correctly), the default block sizes."""
    kernel("tile")
    inputs = make_inputs(2, 3, 80, decay=decay, seed=3)
    assert_close(run(lion_attention_triton, inputs), reference(inputs), 1e-10)


@pytest.mark.parametrize("D,Dv", [(16, 16), (32, 32), (40, 40), (64, 64), (16, 48), (40, 24), (128, 128)])
def test_head_dims(kernel, D, Dv):
    """Head dims padded inside the kernel (40 of 64 columns), Dv != D, up to MAX_HEAD_DIM."""
    kernel("tile", tile_fwd_blocks=(32, 16), tile_bwd_blocks=(32, 16))
    inputs = make_inputs(1, 1, 37, D=D, Dv=Dv, decay="token")
    assert_close(run(lion_attention_triton, inputs), reference(inputs), 1e-10)


@pytest.mark.parametrize("decay", DECAYS)
def test_return_parts(kernel, decay):
    """(num, den) before the division; gradients flow through both (den's gradient enters as dL/dden)."""
    kernel("tile", tile_fwd_blocks=(32, 16), tile_bwd_blocks=(32, 16))
    inputs = make_inputs(2, 1, 45, decay=decay)
    assert_close(run(lion_attention_triton, inputs, parts=True), reference(inputs, parts=True), 1e-10)
    num, den = lion_attention_triton(*[None if t is None else t.float() for t in inputs], return_parts=True)
    assert num.dtype == den.dtype == torch.float32 and den.shape == (2, 1, 45)


def test_return_parts_num_only(kernel):
    """A loss on num alone: the backward gets no dL/dden."""
    kernel("tile")
    inputs = make_inputs(1, 2, 30, decay="token")
    leaves = [t.detach().requires_grad_() for t in inputs]
    got = torch.autograd.grad(lion_attention_triton(*inputs, return_parts=True)[0].sum(), inputs)
    want = torch.autograd.grad(lion_attention_parallel(*leaves, return_parts=True)[0].sum(), leaves)
    assert_close(list(got), list(want), 1e-10)


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("where", ["left", "right", "inside"])
def test_padding_is_removal(kernel, decay, where):
    """Real positions match the reference with padding (pad keys, values and decays removed); pads stay finite."""
    kernel("tile", tile_fwd_blocks=(16, 16), tile_bwd_blocks=(16, 16))
    B, L = 2, 37
    mask = padding_mask(where)
    inputs = make_inputs(B, 1, L, decay=decay)
    assert_close(run(lion_attention_triton, inputs, mask=mask), reference(inputs, mask=mask), 1e-10)
    assert torch.isfinite(lion_attention_triton(*inputs, attention_mask=mask)).all()


def test_strong_decay_float32(kernel):
    """Log-decays down to -20 per token, float32: the exponents are sums of one sign off the diagonal tile, so the
    error stays at float32 rounding (a long prefix sum differenced would lose it)."""
    kernel("tile", tile_fwd_blocks=(32, 16), tile_bwd_blocks=(32, 16))
    inputs = make_inputs(1, 2, 100, decay="token", dtype=torch.float32, low=-20.0)
    for e in rel_errors(run(lion_attention_triton, inputs), reference(inputs)):
        assert e < 1e-5
    inputs = make_inputs(1, 2, 100, decay="token", low=-20.0)  # and float64 to rounding
    assert_close(run(lion_attention_triton, inputs), reference(inputs), 1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("decay", ["none", "token"])
def test_half_precision(kernel, dtype, decay):
    """bf16 / fp16 inputs: fp32 accumulation, output in the input dtype, error at the level of one rounding."""
    kernel("tile")
    inputs = make_inputs(1, 2, 70, D=32, Dv=32, decay=decay, dtype=dtype)
    assert tile(*inputs).dtype == dtype
    rtol = 3e-2 if dtype == torch.bfloat16 else 4e-3
    assert_close(run(lion_attention_triton, inputs), reference(inputs), rtol)


def test_bf16_peaked_attention_like_chunk(kernel):
    """Strong decays (mask ~ identity) in bf16: the tile kernels sum the weights they multiply with and use the
    saved residual of y like the chunk kernels, so their error is within 1.5x the chunk kernels' error."""
    inputs = make_inputs(1, 2, 70, D=32, Dv=32, decay="token", dtype=torch.bfloat16, low=-20.0, seed=5)
    want = reference(inputs)
    kernel("chunk")
    err_chunk = rel_errors(run(lion_attention_triton, inputs), want)
    kernel("tile")
    err_tile = rel_errors(run(lion_attention_triton, inputs), want)
    for i, (e, e_c) in enumerate(zip(err_tile, err_chunk)):
        assert e <= 1.5 * e_c + 1e-4, f"tensor {i}: tile {e:.2e} vs chunk {e_c:.2e}"


# ------------------------------------------------------------------------------------- tile and chunk agree

@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.bfloat16, 2e-2)])
def test_tile_and_chunk_forced_agree(kernel, dtype, tol):
    """The two forced choices compute the same function (to rounding), and so do the mixed pairs: the tile
    forward with the chunk backward and the reverse (the forward's saved tensors are shared)."""
    inputs = make_inputs(2, 2, 50, decay="token", dtype=dtype)
    results = {}
    for fwd, bwd in [("chunk", "chunk"), ("tile", "tile"), ("tile", "chunk"), ("chunk", "tile")]:
        kernel(fwd)
        y = lion_attention_triton(*inputs)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(DEV)
        kernel(bwd)
        results[fwd, bwd] = [y.double()] + [g.double() for g in torch.autograd.grad((y.float() * w).sum(), inputs)]
    base = results["chunk", "chunk"]
    for pair, got in results.items():
        assert_close(got, base, tol)


# ----------------------------------------------------------------------------------------- measured choice

def test_auto_under_interpreter_is_chunk(kernel):
    """"auto" times nothing where there is no CUDA timer: with nothing cached, the interpreter and CPU tensors use
    the chunk kernels, bit for bit, and cache nothing."""
    if CUDA:
        pytest.skip("the interpreter path")
    assert ops._timer(torch.device("cpu")) is None
    inputs = make_inputs(1, 2, 40, decay="token", dtype=torch.float32)
    kernel("chunk")
    want = lion_attention_triton(*inputs)
    kernel("auto")
    n_cached = len(ops._CHOICES)
    assert torch.equal(lion_attention_triton(*inputs), want)
    assert len(ops._CHOICES) == n_cached


def test_choose_kernel_times_once_per_key_and_caches(kernel, caplog):
    """The choice function with an injected timer: it runs both real kernels once per key, keeps the faster,
    logs the choice once, reuses it for the same bucket, times again for a new bucket, never considers the tile
    kernels above tile_max_len, and honours the forced modes. The op then follows the cached choice (its output
    is bit for bit the forced choice's)."""
    kernel("auto")
    q, k, v, a = make_inputs(1, 2, 40, decay="token", dtype=torch.float32)
    k_, v_, a_ = k.detach(), v.detach(), a.detach().contiguous()
    calls = []
    costs = {}  # the "time" of each candidate: tile 1 ms, chunk 2 ms for the first key

    def timer(fn):
        out = fn()  # a real kernel call on the real inputs
        assert isinstance(out, tuple) and out[0].shape == (1, 2, 40, 16)
        calls.append(fn)
        return costs[fn.func.__name__]

    def candidates(L):
        qq, kk, vv, aa = (t[:, :, :L] for t in (q.detach(), k_, v_, a_))
        return {"tile": ops.functools.partial(ops._tile_forward, qq, kk, vv, aa.contiguous(), None, True, False,
                                              1e-6),
                "chunk": ops.functools.partial(ops._forward, qq, kk, vv, aa.contiguous(), None, True, False, 64,
                                               1e-6)}

    costs.update(_tile_forward=1.0, _forward=2.0)
    key = ops.kernel_key("fwd", q, v, a_, True, False, 64)
    with caplog.at_level(logging.INFO, logger="lion.ops.triton.ops"):
        assert ops.choose_kernel(key, 40, candidates(40), timer) == "tile"
        assert len(calls) == 2
        assert ops.choose_kernel(key, 40, candidates(40), timer) == "tile"  # cached: no timing
        assert len(calls) == 2
    assert sum("tile kernel" in r.getMessage() for r in caplog.records) == 1
    # L = 40 and L = 33 share the bucket 64
    assert ops.kernel_key("fwd", q[:, :, :33], v[:, :, :33], a_, True, False, 64) == key
    # the op computes the same key and follows the cached "tile"
    y_auto = lion_attention_triton(q, k, v, a)
    kernel("tile")
    assert torch.equal(y_auto, lion_attention_triton(q, k, v, a))
    # a new bucket (another dtype) is timed again; chunk faster this time
    costs.update(_tile_forward=3.0, _forward=2.0)
    kernel("auto")
    key64 = ops.kernel_key("fwd", q.double(), v, a_, True, False, 64)
    assert key64 != key
    assert ops.choose_kernel(key64, 40, candidates(40), timer) == "chunk"
    assert len(calls) == 4
    # above tile_max_len: chunk without timing; forced modes: no timing
    TUNING["tile_max_len"] = 32
    assert ops.choose_kernel(("other",), 40, candidates(40), timer) == "chunk"
    TUNING["tile_max_len"] = 1024
    for forced in ("tile", "chunk"):
        kernel(forced)
        assert ops.choose_kernel(("other",), 40, candidates(40), timer) == forced
    assert len(calls) == 4


def test_bad_tuning_is_a_clear_error(kernel):
    q, k, v, a = make_inputs(1, 1, 20, decay="token")
    kernel("fastest")
    with pytest.raises(ValueError, match="short_kernel"):
        lion_attention_triton(q, k, v, a)
    kernel("tile", tile_fwd_blocks=(16, 32))
    with pytest.raises(ValueError, match="tile_fwd_blocks"):
        lion_attention_triton(q, k, v, a)


def test_torch_compile_fullgraph_tile(kernel):
    """The choice is made inside the opaque op: with the tile kernels forced a layer still traces as one graph."""
    kernel("tile")
    q, k, v, a = make_inputs(1, 2, 24, decay="token")

    def f(q, k, v, a):
        return lion_attention_triton(q, k, v, a).square().sum()
    explain = torch._dynamo.explain(f)(q, k, v, a)
    assert explain.graph_break_count == 0 and explain.graph_count == 1


# ---------------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("L", [64, 197, 1024])
def test_gpu_tile_bf16_against_float64(kernel, decay, L):
    """Real sizes in bf16 (D = 64, default blocks): output and gradients within bf16 tolerance of float64."""
    kernel("tile")
    inputs = make_inputs(2, 4, L, D=64, Dv=64, decay=decay, dtype=torch.bfloat16, low=-1.0)
    for e in rel_errors(run(lion_attention_triton, inputs), reference(inputs)):
        assert e < 2e-2


@pytest.mark.gpu
@gpu
def test_gpu_auto_choice_is_cached_and_correct(kernel):
    """On CUDA "auto" times both kernels once per key and then reuses the choice; the result is correct."""
    kernel("auto")
    ops._CHOICES.clear()
    inputs = make_inputs(8, 12, 197, D=64, Dv=64, decay="token", dtype=torch.bfloat16, low=-1.0)
    got = run(lion_attention_triton, inputs)
    assert {k[0] for k in ops._CHOICES} == {"fwd", "bwd"} and set(ops._CHOICES.values()) <= {"tile", "chunk"}
    for e in rel_errors(got, reference(inputs)):
        assert e < 2e-2

"""Fused Triton kernels of the chunkwise LION core (forward and backward), behind a torch.library custom op.

    from lion.ops.triton import lion_attention_triton
    y = lion_attention_triton(q, k, v, log_decay, chunk_size=64, normalize=True, attention_mask=None)

Same semantics as `lion.ops.lion_attention(..., form="chunk")`; see ops.py (host side, and the measured choice
between the two kernel families: TUNING["short_kernel"] = "auto" | "tile" | "chunk"), kernels.py (chunk kernels)
and tile.py (parallel-tile kernels for short L).
Runs on CUDA, or on CPU tensors under TRITON_INTERPRET=1 (set before importing this module; slow, for tests).
"""
from lion.ops.triton.ops import MAX_HEAD_DIM, TUNING, lion_attention_triton

__all__ = ["lion_attention_triton", "MAX_HEAD_DIM", "TUNING"]

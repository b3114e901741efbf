"""The LION core: one function, three exact forms (parallel, recurrent, chunkwise), PyTorch and Triton backends.

    lion.ops.naive       parallel form (the float64 oracle of every test)
    lion.ops.recurrent   bidirectional RNN form, hand-written backward, O(D Dv) state
    lion.ops.chunk       chunkwise form in PyTorch
    lion.ops.triton      fused chunkwise Triton kernels
    lion.ops.multiscan   two-scan (natural) variants

log_decay is None, [H], [B, H, L] or a pair (forward, backward) of those (the lower / upper triangle of the mask);
`paper_code_log_decays(a)` is the pair of the authors' LION-S mask.
"""
from lion.ops.attention import FORMS, BACKENDS, lion_attention, paper_code_log_decays
from lion.ops.chunk import lion_attention_chunk
from lion.ops.multiscan import lion_attention_multiscan, snake_orders
from lion.ops.naive import lion_attention_parallel
from lion.ops.recurrent import lion_attention_recurrent

__all__ = ["FORMS", "BACKENDS", "lion_attention", "paper_code_log_decays", "lion_attention_multiscan", "snake_orders",
           "lion_attention_parallel", "lion_attention_chunk", "lion_attention_recurrent"]

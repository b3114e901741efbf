"""Float64 transcriptions of the forward passes of the authors' public code (LIONS-EPFL/LION), written for the tests
from reading `img_classification/lion/models_lion.py` (the LION ViT) and `Masked_Language_Modeling/src/bert_layers.py`
(the masked-LM BERT): plain loops for the masks, plain matrices for the rest, their state-dict key names. Nothing here
calls the project's layers; only torch's elementary functions (linear algebra, layer_norm, gelu, conv2d).

Two precision details of their code are left out on purpose: the vision gate is cast to float32 there, and their
masks are built in float32; the transcription keeps float64 throughout so that it can serve as an exact reference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps)


def _lin(x, sd, key, bias=True):
    y = x @ sd[key + ".weight"].t()
    return y + sd[key + ".bias"] if bias and key + ".bias" in sd else y


def _sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t))


def selective_mask(lam: list[float]) -> torch.Tensor:
    """The authors' LION-S mask of one sequence of decays lam[0..L-1] (in scan order): the product of the decays from
    the key j (inclusive) to the query i (exclusive) below the diagonal, from i+1 to j (inclusive) above it."""
    L = len(lam)
    M = torch.ones(L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(L):
            p = 1.0
            if i > j:
                for m in range(j, i):
                    p *= lam[m]
            elif i < j:
                for m in range(i + 1, j + 1):
                    p *= lam[m]
            M[i, j] = p
    return M


def decay_mask(lam: float, L: int) -> torch.Tensor:
    """LION-D: lam ** |i - j|."""
    M = torch.empty(L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(L):
            M[i, j] = lam ** abs(i - j)
    return M


def snake_scans(S: int) -> tuple[list[int], list[int]]:
    """Their two curves over an S x S patch grid (raster index of the patch at each scan position): 's' walks the
    rows, even rows left to right and odd rows right to left; 'sr' walks the columns the same way (even columns top
    to bottom, odd ones bottom to top)."""
    s, sr = [], []
    for r in range(S):
        cols = range(S) if r % 2 == 0 else reversed(range(S))
        s += [r * S + c for c in cols]
    for c in range(S):
        rows = range(S) if c % 2 == 0 else reversed(range(S))
        sr += [r * S + c for r in rows]
    return s, sr


def _in_scan(M_scan: torch.Tensor, scan: list[int]) -> torch.Tensor:
    """Bring a mask over [class token] + scan positions back to [class token] + raster positions."""
    seq = [0] + [p + 1 for p in scan]  # token at each sequence position
    L = len(seq)
    M = torch.empty(L, L, dtype=torch.float64)
    for a in range(L):
        for b in range(L):
            M[seq[a], seq[b]] = M_scan[a, b]
    return M


# ------------------------------------------------------------------------------------------------- vision
def vit_attention(sd, p, x, heads, mask_type, two_scan, den_eps):
    """One Lion_Attention in their parallel ('Attention') format; x [B, N, C] with the class token first."""
    B, N, C = x.shape
    D = C // heads
    qkv = _lin(x, sd, p + "qkv").view(B, N, 3, heads, D)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, D]
    if mask_type == "Lit":
        q, k = F.elu(q) + 1, F.elu(k) + 1
    else:
        q, k = F.silu(q) + 0.5, F.silu(k) + 0.5
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    S = math.isqrt(N - 1)
    scans = snake_scans(S) if two_scan else None
    out = torch.zeros(B, N, C, dtype=torch.float64)
    for b in range(B):
        for h in range(heads):
            if mask_type == "Lit":
                M = torch.ones(N, N, dtype=torch.float64)
            elif mask_type == "Decay":
                if two_scan:
                    M1 = _in_scan(decay_mask(_sigmoid(float(sd[p + "a_i"][h])), N), scans[0])
                    M2 = _in_scan(decay_mask(_sigmoid(float(sd[p + "a2_i"][h])), N), scans[1])
                    M = 0.5 * (M1 + M2)
                else:
                    M = decay_mask(_sigmoid(float(sd[p + "a_i"][h])), N)
            else:  # Selective: lambda_t = 1 - sigmoid(w . x_t + b), the class token's lambda = 1
                def lams(key):
                    z = x[b] @ sd[key + ".weight"][h] + sd[key + ".bias"][h]
                    return [1.0 - _sigmoid(float(t)) for t in z]
                lam = lams(p + "a_i")
                lam[0] = 1.0
                if two_scan:
                    lam2 = lams(p + "a2_i")
                    M1 = _in_scan(selective_mask([1.0] + [lam[t + 1] for t in scans[0]]), scans[0])
                    M2 = _in_scan(selective_mask([1.0] + [lam2[t + 1] for t in scans[1]]), scans[1])
                    M = 0.5 * (M1 + M2)
                else:
                    M = selective_mask(lam)
            A = (q[b, :, h] @ k[b, :, h].t()) * D ** -0.5 * M
            A = A / (A.sum(-1, keepdim=True) + den_eps)
            out[b, :, h * D:(h + 1) * D] = A @ v[b, :, h]
    return _lin(out, sd, p + "proj")


def vit_forward(sd, img, *, heads, mask_type, two_scan=False, patch, depth, cls_pool=False, den_eps=1e-6):
    """Their Lion_VisionTransformer.forward: logits [B, num_classes]. mask_type: 'Lit', 'Decay', 'Selective'."""
    x = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    if "pos_embed" in sd:
        x = x + sd["pos_embed"]
    for i in range(depth):
        p = f"blocks.{i}."
        x = x + vit_attention(sd, p + "attn.", _ln(x, sd, p + "norm1", 1e-6), heads, mask_type, two_scan, den_eps)
        h = _lin(F.gelu(_lin(_ln(x, sd, p + "norm2", 1e-6), sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
        x = x + h
    x = _ln(x, sd, "norm", 1e-6)
    x = x[:, 0] if cls_pool else x.mean(1)
    return _lin(x, sd, "head")


# ------------------------------------------------------------------------------------------------- masked-LM BERT
def bert_mlm_forward(sd, input_ids, attention_mask, *, heads, arch, layer_norm_after=False, positions=True,
                     eps=1e-12, prefix="bert.", score_dropout_masks=None):
    """Their BertForMaskedLM.forward in the parallel mode: logits [B, L, vocab]. arch: 'lion-lit', 'lion-d',
    'lion-s' or 'attention' (softmax BERT). attention_mask [B, L] of 1 (real) / 0 (pad).
    score_dropout_masks: per layer, the [B, H, L, L] multiplier of their `self.dropout(attention_probs)` in training
    (0 or 1 / (1 - p)); None: evaluation."""
    P = prefix
    B, L = input_ids.shape
    x = sd[P + "embeddings.word_embeddings.weight"][input_ids]
    x = x + sd[P + "embeddings.token_type_embeddings.weight"][torch.zeros_like(input_ids)]
    if positions:
        x = x + sd[P + "embeddings.position_embeddings.weight"][torch.arange(L)][None]
    x = _ln(x, sd, P + "embeddings.LayerNorm", eps)
    C = x.shape[-1]
    D = C // heads
    n_layers = len({k.split(".")[3] for k in sd if k.startswith(P + "encoder.layer.")})
    keep = attention_mask.to(torch.float64)
    for i in range(n_layers):
        p = f"{P}encoder.layer.{i}."
        q = _lin(x, sd, p + "attention.self.query").view(B, L, heads, D)
        k = _lin(x, sd, p + "attention.self.key").view(B, L, heads, D)
        v = _lin(x, sd, p + "attention.self.value").view(B, L, heads, D)
        ctx = torch.zeros(B, L, C, dtype=torch.float64)
        for b in range(B):
            for h in range(heads):
                S = (q[b, :, h] @ k[b, :, h].t()) / math.sqrt(D)
                if arch == "attention":
                    S = S + (1.0 - keep[b])[None, :] * torch.finfo(torch.float64).min
                    Pm = torch.softmax(S, dim=-1)
                else:
                    if arch == "lion-d":
                        M = decay_mask(_sigmoid(float(sd[p + "attention.self.ai"][h])), L)
                    elif arch == "lion-s":
                        z = x[b] @ sd[p + "attention.self.Wa_i.weight"][h] + sd[p + "attention.self.Wa_i.bias"][h]
                        loga = [math.log(1.0 - _sigmoid(float(t)) + 1e-7) for t in z]
                        M = selective_mask([math.exp(a) for a in loga])
                    else:
                        M = torch.ones(L, L, dtype=torch.float64)
                    Pm = S * M * keep[b][None, :]  # pad keys: scores * (extended mask == 0)
                if score_dropout_masks is not None:
                    Pm = Pm * score_dropout_masks[i][b, h]
                ctx[b, :, h * D:(h + 1) * D] = Pm @ v[b, :, h]
        if layer_norm_after:
            ctx = _ln(ctx, sd, p + "attention.self.layer_norm", 1e-5)
        a = _ln(_lin(ctx, sd, p + "attention.output.dense") + x, sd, p + "attention.output.LayerNorm", eps)
        h = F.gelu(_lin(a, sd, p + "intermediate.dense"))
        x = _ln(_lin(h, sd, p + "output.dense") + a, sd, p + "output.LayerNorm", eps)
    h = _ln(F.gelu(_lin(x, sd, "cls.predictions.transform.dense")), sd, "cls.predictions.transform.LayerNorm", eps)
    return h @ sd[P + "embeddings.word_embeddings.weight"].t() + sd["cls.predictions.bias"]

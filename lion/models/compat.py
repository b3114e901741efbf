"""Compatibility profiles: compute exactly what the authors' public code computes (`compat="paper_code"`).

The project's default is the paper's math as written (the symmetric LION-S mask, a trained gate). The authors'
public code (LIONS-EPFL/LION) differs in a few settings; each is an ordinary option of the models, and a profile
only fills in the options the caller did not set, so every setting stays reachable on its own. See docs/COMPAT.md.

    VISION_PAPER_CODE   mixer options of the timm LION ViTs (the model itself adds global_pool="avg_all" and the
                        class-token init std 0.02)
    bert_paper_code()   LionBertConfig options of the authors' masked-LM BERT
"""
from __future__ import annotations

COMPATS = (None, "paper_code")

# The authors' vision code (img_classification/lion/models_lion.py): LION-S mask lambda_j ... lambda_{i-1} below
# the diagonal, lambda = 1 - sigmoid(W x + b) cut from the graph, the class token's lambda = 1, their parallel
# form's row_sum + 1e-6, LION-D logits ~ N(0, 1) and a zero gate bias.
VISION_PAPER_CODE = dict(selective_mask="paper_code", gate="one_minus_sigmoid", gate_detach=True,
                         prefix_unit_decay=True, denominator_eps=1e-6, decay_init="paper")

# Decayed mixers of the masked-LM code train without absolute position embeddings.
_NO_POSITIONS = ("lion-d", "lion-s", "lion-d-ms", "lion-s-ms")


def check_compat(compat, owner: str):
    if compat not in COMPATS:
        raise ValueError(f"{owner}: compat={compat!r} is unknown; use None (the project's defaults) or "
                         "'paper_code' (the authors' public code exactly)")


def bert_paper_code(attention: str, attention_probs_dropout_prob: float) -> dict:
    """LionBertConfig settings of the authors' masked-LM BERT (Masked_Language_Modeling/src/bert_layers.py):
    post-norm blocks without a final encoder norm, no absolute positions for LION-D / LION-S, dropout on the masked
    scores at attention_probs_dropout_prob, no dropout inside the MLP, LayerNorm eps 1e-5 in LION-LIT's norm after
    attention, the LION-S mask lambda_j ... lambda_{i-1} below the diagonal with lambda = 1 - sigmoid(W x + b) and
    log(lambda + 1e-7) (the gate is in the graph there: it trains), LION-D logits ~ N(0, 1), gate bias 0."""
    out = dict(post_norm=True, score_dropout=float(attention_probs_dropout_prob), mlp_inner_dropout=False,
               attn_norm_eps=1e-5, selective_mask="paper_code", gate="one_minus_sigmoid", gate_eps=1e-7,
               gate_detach=False, decay_init="paper")
    if attention in _NO_POSITIONS:
        out["position_embedding_type"] = "none"
    return out

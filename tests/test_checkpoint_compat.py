"""Models saved by an earlier version keep loading and computing the same function.

`tests/data/models_96dc564.pt` holds tiny LION ViTs (every attention of the registry) and lion_bert masked-LM
models with perturbed weights, saved with the code of commit 96dc564 (before the decays became their own classes
and the attention registry its own module), with their inputs and the logits that code computed. Each model is
rebuilt with today's code, loads its state dict strictly (same parameter names) and must give the same logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = torch.load(Path(__file__).parent / "data" / "models_96dc564.pt", weights_only=True)


@pytest.mark.parametrize("prefix", sorted(DATA["vit"]))
def test_vit_checkpoint_from_before_loads_with_identical_logits(prefix):
    import timm

    import lion.models  # noqa: F401

    saved = DATA["vit"][prefix]
    m = timm.create_model(f"{prefix}_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=16, depth=1,
                          num_heads=2, num_classes=3, form="parallel").eval()
    m.load_state_dict(saved["state_dict"], strict=True)
    with torch.no_grad():
        y = m(DATA["inputs"]["x"])
    torch.testing.assert_close(y, saved["logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("attention", sorted(DATA["bert"]))
def test_bert_checkpoint_from_before_loads_with_identical_logits(attention):
    from lion.models.bert import LionBertConfig, LionBertForMaskedLM

    saved = DATA["bert"][attention]
    cfg = json.loads(saved["config"])
    keep = {k: cfg[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "attention", "form")}
    m = LionBertForMaskedLM(LionBertConfig(**keep)).eval()
    missing, unexpected = m.load_state_dict(saved["state_dict"], strict=False)
    assert not unexpected and all("decoder.weight" in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        y = m(input_ids=DATA["inputs"]["input_ids"], attention_mask=DATA["inputs"]["attention_mask"]).logits
    real = DATA["inputs"]["attention_mask"].bool()
    torch.testing.assert_close(y[real], saved["logits"][real], rtol=0, atol=1e-6)

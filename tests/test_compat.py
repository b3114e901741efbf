"""compat="paper_code": the models compute what the authors' public code computes.

Each test builds a tiny model with the profile, writes its weights in the authors' key layout (a small inverse of
the converter, written here), and compares the logits with `paper_code_reference`, a float64 transcription of the
authors' forward that never calls the project's layers, in every form.
"""
from __future__ import annotations

import pytest
import timm
import torch

import lion  # noqa: F401  (registers the models)
from lion.models.bert import LionBertConfig, LionBertForMaskedLM
from lion.models.layers import LionAttention
from tests import paper_code_reference as ref

FORMS = ("parallel", "chunk", "recurrent")
VIT_VARIANTS = {"lion_lit": ("Lit", False), "lion_d": ("Decay", False), "lion_s": ("Selective", False),
                "lion_d_ms": ("Decay", True), "lion_s_ms": ("Selective", True)}
VIT = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)


def _perturb(model, seed=0, scale=0.3):
    """Move every parameter away from its init (zero biases, unit norms, zero gate bias) so that each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            s = 1.5 if "decay_proj" in name else scale
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * s)
    return model


def to_paper_vit(sd: dict, heads: int = 2) -> dict:
    """Our LionViT state dict in the key layout of the authors' Lion_VisionTransformer (`heads` per scan)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("attn.decay_logit"):
            p = k[:-len("decay_logit")]
            out[p + "a_i"] = v[0]
            if v.shape[0] == 2:
                out[p + "a2_i"] = v[1]
        elif ".attn.decay_proj." in k:
            p, suffix = k.split("decay_proj.")
            out[f"{p}a_i.{suffix}"] = v[:heads]
            if v.shape[0] == 2 * heads:
                out[f"{p}a2_i.{suffix}"] = v[heads:]
        else:
            out[k] = v
    return out


def to_paper_bert(sd: dict) -> dict:
    """Our LionBertForMaskedLM state dict in the key layout of the authors' BertForMaskedLM (HF layout)."""
    out, names = {}, {"attn.proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                      "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "norm2": "output.LayerNorm",
                      "attn.norm": "attention.self.layer_norm", "attn.decay_proj": "attention.self.Wa_i"}
    for k, v in sd.items():
        if k.startswith("bert.encoder.blocks."):
            i, rest = k[len("bert.encoder.blocks."):].split(".", 1)
            p = f"bert.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                for n, part in zip(("query", "key", "value"), v.chunk(3)):
                    out[f"{p}attention.self.{n}.{rest.split('.')[-1]}"] = part
            elif rest == "attn.decay_logit":
                out[p + "attention.self.ai"] = v.reshape(-1)
            else:
                mod, suffix = rest.rsplit(".", 1)
                out[f"{p}{names[mod]}.{suffix}"] = v
        elif k.startswith("cls.predictions."):
            rest = k[len("cls.predictions."):]
            if rest == "decoder.bias":
                out["cls.predictions.bias"] = v
            elif rest != "decoder.weight":
                out["cls.predictions.transform." + rest] = v
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------------- vision
def _vit(variant, **kw):
    torch.manual_seed(0)
    model = timm.create_model(f"{variant}_tiny_patch16_224", compat="paper_code", **{**VIT, **kw})
    return _perturb(model.double().eval())


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
def test_vit_paper_code_matches_authors_forward_in_every_form(variant):
    mask_type, two_scan = VIT_VARIANTS[variant]
    model = _vit(variant)
    sd = to_paper_vit({k: v.detach().clone() for k, v in model.state_dict().items()})
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = ref.vit_forward(sd, img, heads=2, mask_type=mask_type, two_scan=two_scan, patch=4, depth=2)
    for form in FORMS:
        model.set_form(form, chunk_size=5)
        with torch.no_grad():
            got = model(img)
        assert (got - expected).abs().max().item() < 1e-10, (variant, form)


def test_vit_paper_code_without_the_denominator_constant_matches_their_recurrent_and_chunk_forms():
    model = _vit("lion_s", denominator_eps=0.0)
    sd = to_paper_vit(model.state_dict())
    img = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    expected = ref.vit_forward(sd, img, heads=2, mask_type="Selective", patch=4, depth=2, den_eps=0.0)
    with_eps = ref.vit_forward(sd, img, heads=2, mask_type="Selective", patch=4, depth=2, den_eps=1e-6)
    assert (expected - with_eps).abs().max() > 1e-9  # the constant is visible at this size
    for form in FORMS:
        model.set_form(form, chunk_size=4)
        with torch.no_grad():
            assert (model(img) - expected).abs().max().item() < 1e-10, form


def test_vit_profile_is_one_switch_with_every_setting_reachable():
    model = timm.create_model("lion_s_tiny_patch16_224", compat="paper_code", **VIT)
    attn = model.blocks[0].attn
    assert (attn.selective_mask, attn.gate, attn.gate_detach, attn.prefix_unit_decay, attn.denominator_eps,
            attn.decay_init) == ("paper_code", "one_minus_sigmoid", True, True, 1e-6, "paper")
    assert model.global_pool == "avg_all"
    assert torch.count_nonzero(attn.decay_proj.bias) == 0  # their init: zero gate bias
    # a setting given explicitly wins over the profile; each setting works without it
    model = timm.create_model("lion_s_tiny_patch16_224", compat="paper_code", gate_detach=False, global_pool="token",
                              **VIT)
    assert model.blocks[0].attn.gate_detach is False and model.global_pool == "token"
    model = timm.create_model("lion_s_tiny_patch16_224", selective_mask="paper_code", **VIT)
    attn = model.blocks[0].attn
    assert attn.selective_mask == "paper_code" and attn.gate == "sigmoid" and model.global_pool == "avg"
    with pytest.raises(ValueError, match="compat='paper'.*paper_code"):
        timm.create_model("lion_s_tiny_patch16_224", compat="paper", **VIT)


def test_vit_decay_init_paper_draws_standard_normal_logits():
    torch.manual_seed(0)
    model = timm.create_model("lion_d_tiny_patch16_224", decay_init="paper", **{**VIT, "embed_dim": 256,
                                                                                "num_heads": 256})
    logits = torch.cat([b.attn.decay_logit.flatten() for b in model.blocks])
    assert 0.8 < logits.std().item() < 1.2 and abs(logits.mean().item()) < 0.2
    default = timm.create_model("lion_d_tiny_patch16_224", **VIT).blocks[0].attn.decay_logit
    assert torch.all(default[0, 1:] > default[0, :-1])  # the default spreads the heads instead


@pytest.mark.parametrize("variant", ["lion_s", "lion_s_ms"])
def test_vit_gate_gets_no_gradient_in_the_profile_and_one_by_default(variant):
    img = torch.randn(2, 3, 16, 16)
    for compat in ("paper_code", None):
        torch.manual_seed(0)
        model = _perturb(timm.create_model(f"{variant}_tiny_patch16_224", compat=compat, **VIT))
        model(img).square().sum().backward()
        grads = [b.attn.decay_proj.weight.grad for b in model.blocks]
        if compat:
            assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
            assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_vit_class_token_decay_is_one_and_the_mask_is_the_authors():
    """The class-token rule and the shifted mask, seen at the layer: two inputs that differ only in the class token's
    gate input give the same patch-token decays, and the mask differs from the symmetric one."""
    torch.manual_seed(0)
    layer = _perturb(LionAttention(8, 2, decay="selective", gate="one_minus_sigmoid", prefix_unit_decay=True)).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    a = layer.log_decays(x, num_prefix_tokens=1)[0]
    assert torch.all(a[..., 0] == 0) and torch.all(a[..., 1:] < 0)
    z = x @ layer.decay_proj.weight.t() + layer.decay_proj.bias
    assert torch.allclose(a[..., 1:], torch.log(1 - torch.sigmoid(z))[0, 1:].t()[None], atol=1e-14)


# ------------------------------------------------------------------------------------------------- masked-LM BERT
BERT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=16, type_vocab_size=2)


def _bert(attention, **kw):
    torch.manual_seed(0)
    config = LionBertConfig(attention=attention, compat="paper_code", **{**BERT, **kw})
    return _perturb(LionBertForMaskedLM(config).double().eval(), scale=0.2), config


def _tokens():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 40, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0  # right padding
    ids[1, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("attention", ["lion-lit", "lion-d", "lion-s", "softmax"])
def test_bert_paper_code_matches_authors_mlm_forward_with_padding_in_every_form(attention):
    model, config = _bert(attention)
    assert config.post_norm and not config.mlp_inner_dropout
    assert config.position_embedding_type == ("none" if attention in ("lion-d", "lion-s") else "absolute")
    sd = to_paper_bert(model.state_dict())
    ids, mask = _tokens()
    arch = "attention" if attention == "softmax" else attention
    expected = ref.bert_mlm_forward(sd, ids, mask, heads=2, arch=arch, layer_norm_after=attention == "lion-lit",
                                    positions=config.position_embedding_type == "absolute")
    real = mask.bool()
    for form in FORMS:
        model.set_form(form, chunk_size=3)
        with torch.no_grad():
            got = model(input_ids=ids, attention_mask=mask).logits
        assert (got - expected)[real].abs().max().item() < 1e-10, (attention, form)


@pytest.mark.parametrize("attention", ["lion-d", "lion-s"])
def test_bert_paper_code_training_forward_with_score_dropout_matches_theirs(attention):
    """In training, their code drops out the masked scores (attention_probs_dropout_prob); with the same dropout draw
    (one [B, H, L, L] draw per layer, in layer order) the logits agree. Hidden dropout 0, so nothing else draws."""
    model, config = _bert(attention, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    assert config.score_dropout == 0.5
    sd = to_paper_bert(model.state_dict())
    ids, mask = _tokens()
    model.train()
    torch.manual_seed(11)
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(11)
    draws = [torch.nn.functional.dropout(torch.ones(2, 2, 7, 7, dtype=torch.float64), 0.5) for _ in range(2)]
    expected = ref.bert_mlm_forward(sd, ids, mask, heads=2, arch=attention, positions=False,
                                    score_dropout_masks=draws)
    assert (got - expected)[mask.bool()].abs().max().item() < 1e-10
    model.eval()
    with torch.no_grad():
        assert (model(input_ids=ids, attention_mask=mask).logits - expected)[mask.bool()].abs().max() > 1e-3


def test_bert_lion_s_gate_trains_in_the_profile_as_in_their_mlm_code_and_can_be_detached():
    """Their masked-LM LION-S keeps the gate in the graph (only the vision code detaches it)."""
    ids, mask = _tokens()
    for detach in (None, True):
        model, _ = _bert("lion-s", gate_detach=detach)
        model.train()
        model(input_ids=ids, attention_mask=mask).logits.float().square().sum().backward()
        g = model.bert.encoder.blocks[0].attn.decay_proj.weight.grad
        if detach:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            assert g is not None and g.abs().sum() > 0


def test_bert_profile_settings_round_trip_and_explicit_values_win(tmp_path):
    model, config = _bert("lion-s")
    model.save_pretrained(tmp_path)
    loaded = LionBertForMaskedLM.from_pretrained(tmp_path, torch_dtype=torch.float64).eval()
    for key in ("compat", "post_norm", "position_embedding_type", "score_dropout", "decay_init", "mlp_inner_dropout",
                "attn_norm_eps", "gate", "gate_eps", "gate_detach", "selective_mask"):
        assert getattr(loaded.config, key) == getattr(config, key), key
    ids, mask = _tokens()
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask).logits
        b = loaded(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)
    c = LionBertConfig(attention="lion-s", compat="paper_code", post_norm=False, position_embedding_type="absolute",
                       **BERT)
    assert c.post_norm is False and c.position_embedding_type == "absolute" and c.selective_mask == "paper_code"
    assert LionBertConfig(attention="lion-s", compat="paper_code", attention_probs_dropout_prob=0.1,
                          **BERT).score_dropout == 0.1


@pytest.mark.slow  # ~8 s under the interpreter on CPU; on a CUDA machine it runs the compiled kernels
def test_paper_code_runs_on_the_triton_backend():
    """The profile's LION-S (pair of decays, parts, +1e-6) through the Triton chunk kernels agrees with PyTorch
    (interpreter on CPU, float32), forward and backward, ViT two-scan and the padded BERT."""
    pytest.importorskip("triton")
    from lion.ops.attention import _triton_entry
    if _triton_entry() is None:
        pytest.skip("Triton kernels not importable here (need CUDA or TRITON_INTERPRET=1)")
    torch.manual_seed(0)
    vit = _perturb(timm.create_model("lion_s_ms_tiny_patch16_224", compat="paper_code", **VIT))
    img = torch.randn(2, 3, 16, 16)
    out = {}
    for backend in ("torch", "triton"):
        vit.zero_grad()
        y = vit.set_form("chunk", chunk_size=8, backend=backend)(img)
        y.square().sum().backward()
        out[backend] = (y.detach(), vit.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["triton"][1], out["torch"][1], rtol=1e-3, atol=1e-4)
    model, _ = _bert("lion-s")
    model = model.float()
    ids, mask = _tokens()
    real = mask.bool()
    with torch.no_grad():
        ref_logits = model.set_form("chunk", chunk_size=4, backend="torch")(input_ids=ids, attention_mask=mask).logits
        got = model.set_form("chunk", chunk_size=4, backend="triton")(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[real], ref_logits[real], rtol=1e-4, atol=1e-4)

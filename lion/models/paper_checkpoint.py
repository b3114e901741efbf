"""Convert state dicts saved by the authors' public code (LIONS-EPFL/LION) into the project's models.

    sd, info = convert_vit_state_dict(their_vit_state_dict)       # img_classification/lion/models_lion.py keys
    model = timm.create_model(info["model_name"], pretrained=True, compat="paper_code", **info["kwargs"],
                              pretrained_cfg_overlay=dict(file="converted.safetensors", num_classes=...))
    sd, config = convert_bert_state_dict(their_mlm_state_dict, their_config_dict)   # src/bert_layers.py keys
    LionBertForMaskedLM(config).load_state_dict(sd)                 # config has compat="paper_code"

Every key of the input is either mapped, or dropped for a stated reason (buffers, a position table the model never
adds, the decoder weight tied to the word embeddings), or reported: unknown and missing keys stop the conversion with
one ValueError that lists them. `scripts/convert_paper_checkpoint.py` is the command-line front end.
"""
from __future__ import annotations

import re

import torch

# ------------------------------------------------------------------------------------------------- vision
_VIT_SIZES = {192: "tiny", 384: "small", 768: "base"}
_VIT_HEADS = {192: 3, 384: 6, 768: 12}
_VIT_GLOBAL = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
               "norm.bias", "head.weight", "head.bias")
_VIT_BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
              "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")


def _key_error(kind: str, unknown, missing, hint: str = ""):
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} unknown key(s): {sorted(unknown)}")
    if missing:
        parts.append(f"{len(missing)} missing key(s): {sorted(missing)}")
    raise ValueError(f"convert {kind} checkpoint: the state dict is not in the authors' layout; "
                     + "; ".join(parts) + (f". {hint}" if hint else ""))


def unwrap_state_dict(obj) -> dict:
    """The tensor dict inside a saved checkpoint: DeiT-style {'model': ...}, {'state_dict': ...}, Composer
    {'state': {'model': ...}}, or the state dict itself."""
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and isinstance(obj["state"].get("model"), dict):
        obj = obj["state"]["model"]
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and obj[key] and all(
                isinstance(v, torch.Tensor) for v in obj[key].values()):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("convert: could not find a state dict (a dict of tensors) in the checkpoint; expected the "
                         "state dict itself, {'model': state_dict} (DeiT), {'state_dict': ...} or Composer's "
                         "{'state': {'model': ...}}")
    return dict(obj)


def convert_vit_state_dict(sd: dict, num_heads: int | None = None) -> tuple[dict, dict]:
    """Map a state dict of the authors' Lion_VisionTransformer onto `LionViT`.

    Returns (state_dict, info): info["model_name"] (e.g. "lion_s_ms_small_patch16_224") and info["kwargs"] (the
    timm.create_model arguments the weights need besides compat: patch_size, img_size, in_chans, depth, embed_dim,
    num_heads, num_classes, pos_embed) and info["attention"]. LION-D/S read the heads from their decay parameters;
    LION-LIT takes `num_heads`, or the heads of the tiny / small / base sizes (3 / 6 / 12).
    """
    sd = unwrap_state_dict(sd)
    blocks = sorted({int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    depth = (max(blocks) + 1) if blocks else 0
    if depth == 0 or "patch_embed.proj.weight" not in sd or "blocks.0.attn.qkv.weight" not in sd:
        _key_error("ViT", [], [k for k in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight") if k not in sd],
                   "Pass the state dict of img_classification/lion/models_lion.py's Lion_VisionTransformer")
    # the mixer is read from every block, so that a key missing in one block is reported as missing
    if any(re.fullmatch(r"blocks\.\d+\.attn\.a2?_i\.weight", k) for k in sd):
        decay, gate_keys = "selective", ("weight", "bias")
    elif any(re.fullmatch(r"blocks\.\d+\.attn\.a2?_i", k) for k in sd):
        decay, gate_keys = "fixed", ("",)
    else:
        decay, gate_keys = "none", ()
    two_scan = any(re.match(r"blocks\.\d+\.attn\.a2_i", k) for k in sd)
    scans = ("a_i", "a2_i") if two_scan else ("a_i",)
    expected = {k for k in _VIT_GLOBAL if k != "pos_embed"} | ({"pos_embed"} if "pos_embed" in sd else set())
    for i in range(depth):
        expected |= {f"blocks.{i}.{k}" for k in _VIT_BLOCK}
        expected |= {f"blocks.{i}.attn.{s}" + (f".{g}" if g else "") for s in scans for g in gate_keys}
    unknown, missing = set(sd) - expected, expected - set(sd)
    if unknown or missing:
        _key_error("ViT", unknown, missing, "Nothing was written")
    embed_dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    heads = (sd["blocks.0.attn.a_i.weight"].shape[0] if decay == "selective" else sd["blocks.0.attn.a_i"].shape[0]
             if decay == "fixed" else num_heads or _VIT_HEADS.get(int(embed_dim)))
    if heads is None:
        raise ValueError(f"convert ViT checkpoint: a LION-LIT model of width {embed_dim} does not show its number of "
                         "heads in its weights; pass --num-heads")
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.attn\.(a_i|a2_i)(\.weight|\.bias)?$", k)
        if m is None:
            out[k] = v
    for i in range(depth):
        p = f"blocks.{i}.attn."
        if decay == "fixed":
            out[p + "decay_logit"] = torch.stack([sd[p + s] for s in scans])
        elif decay == "selective":
            out[p + "decay_proj.weight"] = torch.cat([sd[p + s + ".weight"] for s in scans])
            out[p + "decay_proj.bias"] = torch.cat([sd[p + s + ".bias"] for s in scans])
    variant = {"none": "lion_lit", "fixed": "lion_d", "selective": "lion_s"}[decay] + ("_ms" if two_scan else "")
    size = _VIT_SIZES.get(embed_dim, "base")
    num_classes = sd["head.weight"].shape[0]
    kwargs = dict(num_classes=num_classes, patch_size=int(patch), in_chans=int(in_chans), embed_dim=int(embed_dim),
                  depth=depth, pos_embed="learn" if "pos_embed" in sd else "none")
    kwargs["num_heads"] = int(heads)
    if "pos_embed" in sd:
        grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
        kwargs["img_size"] = grid * int(patch)
    attention = {"none": "lion-lit", "fixed": "lion-d", "selective": "lion-s"}[decay] + ("-ms" if two_scan else "")
    return out, dict(model_name=f"{variant}_{size}_patch16_224", kwargs=kwargs, attention=attention)


# ------------------------------------------------------------------------------------------------- masked-LM BERT
ARCH_TYPES = {"lion-lit": "lion-lit", "linear_attention": "lion-lit", "lion-d": "lion-d", "nova": "lion-d",
              "lion-s": "lion-s", "nova-inputdep": "lion-s", "attention": "softmax"}
_LAYER_MAP = {"attention.output.dense": "attn.proj", "attention.output.LayerNorm": "norm1",
              "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "output.LayerNorm": "norm2",
              "attention.self.layer_norm": "attn.norm", "attention.self.Wa_i": "attn.decay_proj"}
_CONFIG_KEYS = ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
                "pad_token_id", "initializer_range", "max_position_embeddings")


def _strip_prefix(sd: dict) -> dict:
    """Composer's HuggingFaceModel keeps the HF model as `model`: drop a 'model.' prefix shared by every key."""
    if sd and all(k.startswith("model.") for k in sd):
        return {k[len("model."):]: v for k, v in sd.items()}
    return sd


def convert_bert_state_dict(sd: dict, paper_config: dict | None = None, *, attention: str | None = None,
                            positions: str | None = None, num_heads: int | None = None):
    """Map a state dict of the authors' BertForMaskedLM (HF layout, or Composer's with a 'model.' prefix) onto
    `LionBertForMaskedLM` with compat="paper_code".

    paper_config: their config.json as a dict (arch_type, layer_norm_after, position_embedding_type, sizes, ...),
    if there is one. attention / positions ("absolute" | "none") / num_heads override or fill in what the config
    and the weights do not say (LION-D/S read the heads from their decay parameters; LION-LIT and softmax need the
    config or num_heads). Returns (state_dict, LionBertConfig, notes): notes lists the keys dropped on purpose.
    """
    from lion.models.bert import LionBertConfig

    sd = _strip_prefix(unwrap_state_dict(sd))
    cfg = dict(paper_config or {})
    pre = "bert.encoder.layer."
    layers = sorted({int(m.group(1)) for k in sd for m in [re.match(r"bert\.encoder\.layer\.(\d+)\.", k)] if m})
    if not layers or "bert.embeddings.word_embeddings.weight" not in sd:
        _key_error("BERT", [], [k for k in ("bert.embeddings.word_embeddings.weight", pre + "0.attention.self.query"
                                            ".weight") if k not in sd],
                   "Pass the state dict of Masked_Language_Modeling/src/bert_layers.py's BertForMaskedLM")
    depth = max(layers) + 1
    def any_layer(suffix):
        return any(re.fullmatch(r"bert\.encoder\.layer\.\d+\." + re.escape(suffix), k) for k in sd)
    from_keys = ("lion-s" if any_layer("attention.self.Wa_i.weight") else "lion-d"
                 if any_layer("attention.self.ai") else "lion-lit"
                 if any_layer("attention.self.layer_norm.weight") else None)
    if attention is None and cfg.get("arch_type") is not None:
        if cfg["arch_type"] not in ARCH_TYPES:
            raise ValueError(f"convert BERT checkpoint: arch_type={cfg['arch_type']!r} in the config is not one of "
                             f"{sorted(ARCH_TYPES)}")
        attention = ARCH_TYPES[cfg["arch_type"]]
    attention = attention or from_keys
    if attention is None:
        raise ValueError("convert BERT checkpoint: the weights have no decay parameters or attention LayerNorm and "
                         "there is no config with arch_type, so LION-LIT and the softmax BERT cannot be told apart; "
                         "pass --attention lion-lit or --attention softmax (or the config.json)")
    if attention not in ("lion-lit", "lion-d", "lion-s", "softmax"):
        raise ValueError(f"convert BERT checkpoint: attention={attention!r}; use lion-lit, lion-d, lion-s or softmax")
    attn_norm = any_layer("attention.self.layer_norm.weight")
    if "layer_norm_after" in cfg and bool(cfg["layer_norm_after"]) != attn_norm and attention != "softmax":
        raise ValueError(f"convert BERT checkpoint: the config says layer_norm_after={cfg['layer_norm_after']} but "
                         f"the weights {'have' if attn_norm else 'have no'} attention.self.layer_norm")
    if positions is None:
        if "position_embedding_type" in cfg:
            positions = "absolute" if cfg["position_embedding_type"] == "absolute" else "none"
        else:
            positions = "none" if attention in ("lion-d", "lion-s") else "absolute"
    if num_heads is None:
        decay_keys = sorted(k for k in sd if re.fullmatch(r"bert\.encoder\.layer\.\d+\.attention\.self\."
                                                            r"(ai|Wa_i\.weight)", k))
        if attention in ("lion-d", "lion-s") and decay_keys:
            num_heads = sd[decay_keys[0]].shape[0]
        elif "num_attention_heads" in cfg:
            num_heads = cfg["num_attention_heads"]
        else:
            raise ValueError(f"convert BERT checkpoint: the number of heads of a {attention} model is not in its "
                             "weights; pass the config.json or --num-heads")

    per_layer = ["attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
                 "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
                 "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
                 "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
                 "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias"]
    if attention == "lion-d":
        per_layer += ["attention.self.ai"]
    if attention == "lion-s":
        per_layer += ["attention.self.Wa_i.weight", "attention.self.Wa_i.bias"]
    if attn_norm and attention != "softmax":
        per_layer += ["attention.self.layer_norm.weight", "attention.self.layer_norm.bias"]
    required = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
                "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias",
                "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                "cls.predictions.bias"} | {f"{pre}{i}.{k}" for i in range(depth) for k in per_layer}
    if positions == "absolute":
        required.add("bert.embeddings.position_embeddings.weight")
    # present in their saves, dropped on purpose: buffers, the tied decoder (checked below), a table never added
    droppable = {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids", "cls.predictions.decoder.weight",
                 "cls.predictions.decoder.bias"}
    if positions == "none":
        droppable.add("bert.embeddings.position_embeddings.weight")
    unknown, missing = set(sd) - required - droppable, required - set(sd)
    if unknown or missing:
        _key_error("BERT", unknown, missing, "Nothing was written")

    notes = []
    word = sd["bert.embeddings.word_embeddings.weight"]
    if "cls.predictions.decoder.weight" in sd:
        if not torch.equal(sd["cls.predictions.decoder.weight"], word):
            raise ValueError("convert BERT checkpoint: cls.predictions.decoder.weight differs from the word "
                             "embeddings; the authors' model ties them, and so does LionBertForMaskedLM")
        notes.append("cls.predictions.decoder.weight: tied to bert.embeddings.word_embeddings.weight")
    if "cls.predictions.decoder.bias" in sd:
        if not torch.equal(sd["cls.predictions.decoder.bias"], sd["cls.predictions.bias"]):
            raise ValueError("convert BERT checkpoint: cls.predictions.decoder.bias differs from cls.predictions.bias"
                             " (the authors' model shares them)")
        notes.append("cls.predictions.decoder.bias: the same tensor as cls.predictions.bias")
    for k in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids"):
        if k in sd:
            notes.append(f"{k}: a buffer (arange / zeros), not a weight")
    if positions == "none" and "bert.embeddings.position_embeddings.weight" in sd:
        notes.append("bert.embeddings.position_embeddings.weight: the authors' model builds this table but never adds "
                     "it (position_embedding_type is not 'absolute'), so the converted model has none")

    out = {}
    for k in ("word_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"):
        out["bert.embeddings." + k] = sd["bert.embeddings." + k]
    if positions == "absolute":
        out["bert.embeddings.position_embeddings.weight"] = sd["bert.embeddings.position_embeddings.weight"]
    for i in range(depth):
        p, q = f"{pre}{i}.", f"bert.encoder.blocks.{i}."
        for suffix in ("weight", "bias"):
            out[q + "attn.qkv." + suffix] = torch.cat([sd[f"{p}attention.self.{n}.{suffix}"]
                                                       for n in ("query", "key", "value")])
        for src, dst in _LAYER_MAP.items():
            for suffix in ("weight", "bias"):
                if f"{p}{src}.{suffix}" in sd:
                    out[f"{q}{dst}.{suffix}"] = sd[f"{p}{src}.{suffix}"]
        if attention == "lion-d":
            out[q + "attn.decay_logit"] = sd[p + "attention.self.ai"].reshape(1, -1)
    out["cls.predictions.dense.weight"] = sd["cls.predictions.transform.dense.weight"]
    out["cls.predictions.dense.bias"] = sd["cls.predictions.transform.dense.bias"]
    out["cls.predictions.LayerNorm.weight"] = sd["cls.predictions.transform.LayerNorm.weight"]
    out["cls.predictions.LayerNorm.bias"] = sd["cls.predictions.transform.LayerNorm.bias"]
    out["cls.predictions.decoder.weight"] = word
    out["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]

    kw = {k: cfg[k] for k in _CONFIG_KEYS if k in cfg}
    if positions == "absolute":
        kw["max_position_embeddings"] = sd["bert.embeddings.position_embeddings.weight"].shape[0]
    config = LionBertConfig(
        vocab_size=word.shape[0], hidden_size=word.shape[1], num_hidden_layers=depth,
        num_attention_heads=int(num_heads), intermediate_size=sd[pre + "0.intermediate.dense.weight"].shape[0],
        type_vocab_size=sd["bert.embeddings.token_type_embeddings.weight"].shape[0], attention=attention,
        attn_norm=attn_norm and attention != "softmax", position_embedding_type=positions, compat="paper_code", **kw)
    return out, config, notes

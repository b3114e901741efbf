"""Convert a checkpoint of the authors' public LION code into one the project loads with compat="paper_code".

Vision (img_classification/lion/models_lion.py, a DeiT-style checkpoint {'model': state_dict, ...} or the state
dict itself) -> one weights file for timm:

    python scripts/convert_paper_checkpoint.py vit their_checkpoint.pth lion_s_small.safetensors
    # then, as printed:  timm.create_model("lion_s_small_patch16_224", pretrained=True, compat="paper_code",
    #                        pretrained_cfg_overlay=dict(file="lion_s_small.safetensors", num_classes=1000))

Masked-LM BERT (Masked_Language_Modeling/src/bert_layers.py; a Hugging Face folder with config.json and
model.safetensors / pytorch_model.bin, such as a local download of LIONS-EPFL/LION-S-base-mlm, or a Composer
checkpoint whose state.model holds the weights) -> a Hugging Face folder:

    python scripts/convert_paper_checkpoint.py bert LION-S-base-mlm/ lion-s-base-mlm/
    # then:  AutoModelForMaskedLM.from_pretrained("lion-s-base-mlm")   (after `import lion`)

Unknown or missing keys stop the conversion with one error that lists them; keys dropped on purpose (buffers, the
decoder tied to the word embeddings, a position table their model never adds) are printed. Pickled checkpoints are
read with torch.load(weights_only=True); pass --trust-pickle for files that hold other Python objects (e.g. DeiT's
saved argparse namespace), only for files you trust.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lion.models.paper_checkpoint import (convert_bert_state_dict, convert_vit_state_dict,  # noqa: E402
                                          unwrap_state_dict)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_file(path: Path, trust_pickle: bool = False):
    """A checkpoint file: safetensors, or a torch pickle (weights only unless trust_pickle)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_st
        return load_st(str(path))
    import argparse

    try:
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        # DeiT-style checkpoints also hold the training script's argparse namespace: plain data, allowed by name
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises several types for a refused pickle)
        if trust_pickle:
            raise
        raise SystemExit(f"convert: {path} holds more than tensors and could not be read with weights_only=True "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); if you trust the file, pass "
                         "--trust-pickle") from None


def load_bert_input(path: Path, trust_pickle: bool):
    """(state dict, their config dict or None, folder with tokenizer files or None) from a folder or a file."""
    config = None
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin")) or sorted(
            path.glob("*.pt"))
        if not files:
            raise SystemExit(f"convert: {path} has no *.safetensors, pytorch_model*.bin or *.pt file")
        sd = {}
        for f in files:
            obj = load_file(f, trust_pickle)
            config = config or composer_config(obj)
            sd.update(unwrap_state_dict(obj))
        if (path / "config.json").exists():
            config = json.loads((path / "config.json").read_text())
        return sd, config, path
    obj = load_file(path, trust_pickle)
    return unwrap_state_dict(obj), composer_config(obj), None


def composer_config(obj):
    """The Hugging Face config Composer keeps beside the weights (state.integrations.huggingface), or None."""
    try:
        return dict(obj["state"]["integrations"]["huggingface"]["model"]["config"]["content"])
    except (KeyError, TypeError, ValueError):
        return None


def convert_vit(args) -> int:
    sd = unwrap_state_dict(load_file(Path(args.input), args.trust_pickle))
    out, info = convert_vit_state_dict(sd, num_heads=args.num_heads)
    dst = Path(args.output)
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = {k: v.contiguous() for k, v in out.items()}
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(out, str(dst))
    else:
        torch.save(out, dst)
    kw = dict(info["kwargs"])
    num_classes = kw.pop("num_classes")
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    print(f"wrote {dst} ({info['attention']}, {len(out)} tensors). Load it with:\n"
          f"  import lion, timm\n"
          f"  model = timm.create_model({info['model_name']!r}, pretrained=True, compat='paper_code'{extra},\n"
          f"      num_classes={num_classes}, pretrained_cfg_overlay=dict(file={str(dst)!r}, num_classes={num_classes}))"
          "\n(add global_pool='token' for a model trained with --cls_tok)")
    return 0


def convert_bert(args) -> int:
    from lion.models.bert import LionBertForMaskedLM

    sd, config, folder = load_bert_input(Path(args.input), args.trust_pickle)
    if args.config:
        config = json.loads(Path(args.config).read_text())
    out, lion_config, notes = convert_bert_state_dict(sd, config, attention=args.attention,
                                                      positions=args.positions, num_heads=args.num_heads)
    model = LionBertForMaskedLM(lion_config)
    missing, unexpected = model.load_state_dict(out, strict=False)
    missing = [k for k in missing if k != "cls.predictions.decoder.weight"]
    if missing or unexpected:  # the converter's own mapping is wrong: never write a half-loaded model
        raise SystemExit(f"convert: internal mapping error, missing {missing}, unexpected {unexpected}")
    dst = Path(args.output)
    model.save_pretrained(dst)
    if folder is not None:
        for name in TOKENIZER_FILES:
            if (folder / name).exists():
                shutil.copy(folder / name, dst / name)
    for note in notes:
        print(f"dropped on purpose: {note}")
    print(f"wrote {dst} ({lion_config.attention}, compat='paper_code', post_norm={lion_config.post_norm}, "
          f"positions={lion_config.position_embedding_type}). Load it with:\n"
          f"  import lion\n  from transformers import AutoModelForMaskedLM\n"
          f"  model = AutoModelForMaskedLM.from_pretrained({str(dst)!r})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("vit", "bert"), help="the authors' ViT or their masked-LM BERT")
    p.add_argument("input", help="vit: a checkpoint file; bert: a Hugging Face folder or a (Composer) checkpoint")
    p.add_argument("output", help="vit: the weights file to write (.safetensors or .pth); bert: a folder")
    p.add_argument("--config", help="bert: their config.json, if the input has none")
    p.add_argument("--attention", choices=("lion-lit", "lion-d", "lion-s", "softmax"),
                   help="bert: the mixer, when neither the config nor the weights tell (LION-LIT vs softmax)")
    p.add_argument("--positions", choices=("absolute", "none"),
                   help="bert: absolute position embeddings or none (default: from the config; else none for "
                        "LION-D/S, absolute for LION-LIT and softmax, as their recipes)")
    p.add_argument("--num-heads", type=int, help="heads, when the weights do not show them (LION-LIT, softmax)")
    p.add_argument("--trust-pickle", action="store_true", help="read pickles with weights_only=False")
    args = p.parse_args(argv)
    try:
        return convert_vit(args) if args.kind == "vit" else convert_bert(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

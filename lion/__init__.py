"""LION: bidirectional linear attention (Afzal et al., arXiv 2502.16249).

Layers of the package, each importing only what it needs:

    lion.ops        the attention core (torch only): lion_attention, lion_attention_multiscan
    lion.models     the models, registered with timm and transformers' Auto classes when imported
    lion.data       data modules          lion.tasks   LightningModules       lion.pipeline  train / evaluate
    lion.run        the run layer (config checks, run directory, checkpoints)  lion.results  the paper's tables

`import lion` itself is instant. The models still register the way users expect: as soon as timm or transformers
is imported (before or after `import lion`), `lion.models` is imported with it, so `import lion, timm;
timm.create_model("lion_s_small_patch16_224")` and `AutoConfig.for_model("lion_bert")` work as before, while
`from lion.ops import lion_attention` or `scripts/make_tables.py` never load timm or transformers.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

_SUBMODULES = ("ops", "models", "data", "tasks", "pipeline", "run", "results", "callbacks", "convert", "bench",
               "reproduce")
_LAZY = {"lion_attention": "lion.ops", "lion_attention_multiscan": "lion.ops"}
_TRIGGERS = ("timm", "transformers")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"lion.{name}")
    raise AttributeError(f"module 'lion' has no attribute {name!r}")


def _register_models() -> None:
    importlib.import_module("lion.models")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Imports lion.models right after timm or transformers has been imported (a post-import hook)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TRIGGERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_models()

        try:
            loader.exec_module = exec_then_register  # this loader instance serves this one module
        except AttributeError:
            return spec
        return spec


if any(name in sys.modules for name in _TRIGGERS):
    _register_models()
elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterImport())

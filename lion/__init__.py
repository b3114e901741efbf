"""LION: bidirectional linear attention (Afzal et al., arXiv 2502.16249).

Importing `lion` registers the LION models with timm and the `lion_bert` classes with transformers' Auto classes.
"""
from lion import ops  # noqa: F401
from lion.ops import lion_attention, lion_attention_multiscan  # noqa: F401
from lion import models  # noqa: F401  (registers timm models and HF Auto classes)

__version__ = "0.1.0"

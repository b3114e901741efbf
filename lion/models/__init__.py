"""LION models: one shared encoder and attention registry, and the three model families built on it.

    lion.models.layers     LionAttention, SoftmaxAttention, Mlp, Block
    lion.models.registry   build_attention, Encoder, set_form; names lion-lit, lion-d, lion-s, lion-d-ms, lion-s-ms,
                           softmax
    lion.models.vit        LionViT, registered in timm: lion_{lit,d,s}_{size}_patch16_224,
                           lion_{d,s}_ms_{size}_patch16_224, softmax_vit_{size}_patch16_224 (size: tiny, small, base)
    lion.models.bert       LionBertConfig ("lion_bert"), LionBertModel, LionBertForMaskedLM,
                           LionBertForSequenceClassification, registered with the transformers Auto classes
    lion.models.lra        LRAClassifier, LRARetrieval, create_lra_model
    lion.models.compat     compat="paper_code": the settings of the authors' public code (docs/COMPAT.md)
    lion.models.paper_checkpoint  the authors' ViT / masked-LM BERT state dicts -> ours
                           (scripts/convert_paper_checkpoint.py)

Every model has `set_form(form, chunk_size=None)`: "parallel", "chunk", "recurrent" or "auto", weights unchanged.
"""
from lion.models.layers import Block, DecayGate, LionAttention, Mlp, SoftmaxAttention
from lion.models.registry import ATTENTIONS, Encoder, build_attention, decay_parameter_names, set_form
from lion.models.vit import MODEL_NAMES as VIT_MODEL_NAMES, LionViT
from lion.models.bert import (LionBertConfig, LionBertForMaskedLM, LionBertForSequenceClassification,
                              LionBertModel)
from lion.models.lra import LRA_TASKS, LRAClassifier, LRARetrieval, create_lra_model

__all__ = ["Block", "DecayGate", "LionAttention", "Mlp", "SoftmaxAttention", "ATTENTIONS", "Encoder",
           "build_attention", "decay_parameter_names", "set_form", "VIT_MODEL_NAMES", "LionViT", "LionBertConfig",
           "LionBertForMaskedLM", "LionBertForSequenceClassification", "LionBertModel", "LRA_TASKS",
           "LRAClassifier", "LRARetrieval", "create_lra_model"]

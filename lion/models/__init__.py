"""LION models: the shared encoder and attention registry, and the three model families.

    lion.models.layers     LionAttention, SoftmaxAttention, Mlp, Block
    lion.models.registry   build_attention, Encoder, set_form (names: lion-lit, lion-d, lion-s, lion-d-ms,
                           lion-s-ms, softmax)
    lion.models.vit        LionViT, registered in timm (lion_{lit,d,s}[_ms]_{tiny,small,base}_patch16_224, softmax_vit_*)
"""
from lion.models.layers import LionAttention, SoftmaxAttention, Mlp, Block
from lion.models.registry import ATTENTIONS, build_attention, Encoder, set_form, decay_parameter_names
from lion.models.vit import LionViT, MODEL_NAMES as VIT_MODEL_NAMES
from lion.models.bert import (LionBertConfig, LionBertModel, LionBertForMaskedLM,
                              LionBertForSequenceClassification)
from lion.models.lra import LRAClassifier, LRARetrieval, create_lra_model, LRA_TASKS

"""LION BERT: a BERT-style encoder on the shared LION `Encoder`, as Hugging Face transformers models.

    import lion
    from transformers import AutoConfig, AutoModelForMaskedLM
    config = AutoConfig.for_model("lion_bert", attention="lion-s", hidden_size=256, num_hidden_layers=4,
                                  num_attention_heads=4, intermediate_size=1024)
    model = AutoModelForMaskedLM.from_config(config)
    model.set_form("chunk", chunk_size=64)        # same weights and outputs; saved in the config

Classes: `LionBertConfig` (model_type "lion_bert"), `LionBertModel`, `LionBertForMaskedLM` (decoder tied to the word
embeddings), `LionBertForSequenceClassification` (GLUE; regression when num_labels == 1 or
problem_type="regression"), all registered with AutoConfig / AutoModel / AutoModelForMaskedLM /
AutoModelForSequenceClassification on `import lion`. Sizes: `LionBertConfig.base(...)`, `LionBertConfig.large(...)`.

Architecture: word + position + token-type embeddings -> LayerNorm -> dropout -> pre-norm blocks (the registry's
mixer) -> final LayerNorm (or post-norm blocks and no final norm: `post_norm=True`); heads as in BERT (pooler on the
first token, MLM transform + tied decoder). The mixer defaults are those of the paper's masked-LM code: no feature
map, no normalisation, q.k / sqrt(D), and a LayerNorm after attention for LION-LIT only (`attn_norm="auto"`).
Padding through `attention_mask` equals removal (docs/MATH.md section 1). `compat="paper_code"` gives the authors' masked-LM BERT
exactly (docs/COMPAT.md).
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                          PretrainedConfig, PreTrainedModel)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput

from lion.models.compat import bert_paper_code, check_compat
from lion.models.layers import DECAY_INITS, FEATURE_MAPS, GATES, SELECTIVE_MASKS, DecayGate, LionAttention, check_form
from lion.models.registry import Encoder, canonical_name, set_form

try:  # transformers >= 5: init functions that skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4
    init = SimpleNamespace(normal_=nn.init.normal_, zeros_=nn.init.zeros_, ones_=nn.init.ones_,
                           copy_=lambda t, value: t.copy_(value))

_HF5 = int(transformers.__version__.split(".")[0]) >= 5

PRESETS = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


class LionBertConfig(PretrainedConfig):
    """BERT's configuration fields plus the LION mixer.

    LION fields: attention (registry name: lion-lit, lion-d, lion-s, lion-d-ms, lion-s-ms, softmax), form,
    chunk_size, backend, feature_map ("none" default, as the paper's MLM code; "auto", "elu1", "silu_norm"),
    normalize (False default), scale (None: 1/sqrt(head_dim)), attn_norm ("auto": True for lion-lit only),
    decay_horizon, drop_path_rate. `position_embedding_type` is "absolute" (learned, BERT) or "none".

    The paper's BERT (all off by default; each one on its own, or all at once through `compat`):
        post_norm (False): post-norm blocks LayerNorm(x + sublayer(x)) and no final encoder norm (True), instead of
            pre-norm blocks and a final norm.
        score_dropout (0.0): dropout on the masked attention scores of the LION mixer (see `LionAttention`; a
            training step with it computes the parallel form: form "auto" switches, "chunk"/"recurrent" raise).
        decay_init ("default"): "paper" draws LION-D logits from a standard normal and starts the LION-S gate bias
            at 0.
        mlp_inner_dropout (True): dropout between the two MLP layers (BERT has none there).
        attn_norm_eps (None: layer_norm_eps): epsilon of the LayerNorm after attention (LION-LIT).
        gate, gate_eps, gate_detach, selective_mask, denominator_eps: LION-S gate and mask conventions and an
            additive constant in the normaliser, see `LionAttention`.
        compat (None): "paper_code" fills every option above that is not given with the value of the authors'
            masked-LM code (`lion.models.compat.bert_paper_code`; positions "none" for LION-D/S). Saved configs
            hold the resolved values, so save_pretrained / from_pretrained round-trip them.
    """

    model_type = "lion_bert"

    def __init__(self, vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type=None,
                 classifier_dropout=None, attention="lion-s", form="auto", chunk_size=64, backend="auto",
                 feature_map="none", normalize=False, scale=None, attn_norm="auto", decay_horizon=(4.0, 256.0),
                 drop_path_rate=0.0, tie_word_embeddings=True, post_norm=None, score_dropout=None, decay_init=None,
                 mlp_inner_dropout=None, attn_norm_eps=None, gate=None, gate_eps=None, gate_detach=None,
                 selective_mask=None, denominator_eps=None, compat=None, **kwargs):
        attention = canonical_name(attention)
        check_form(form, chunk_size, backend, owner="LionBertConfig")
        check_compat(compat, "LionBertConfig")
        given = dict(position_embedding_type=position_embedding_type, post_norm=post_norm,
                     score_dropout=score_dropout, decay_init=decay_init, mlp_inner_dropout=mlp_inner_dropout,
                     attn_norm_eps=attn_norm_eps, gate=gate, gate_eps=gate_eps, gate_detach=gate_detach,
                     selective_mask=selective_mask, denominator_eps=denominator_eps)
        profile = bert_paper_code(attention, attention_probs_dropout_prob) if compat == "paper_code" else {}
        opts = {k: v if v is not None else profile.get(k, _PAPER_OPTION_DEFAULTS[k]) for k, v in given.items()}
        position_embedding_type = opts.pop("position_embedding_type")
        _check_paper_options(opts)
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"LionBertConfig: feature_map={feature_map!r} is unknown; use one of {FEATURE_MAPS}")
        if attn_norm not in ("auto", True, False):
            raise ValueError(f"LionBertConfig: attn_norm must be 'auto', True or False, got {attn_norm!r}")
        if position_embedding_type not in ("absolute", "none"):
            raise ValueError(f"LionBertConfig: position_embedding_type={position_embedding_type!r}; use 'absolute' "
                             "or 'none'")
        if hidden_size % num_attention_heads:
            raise ValueError(f"LionBertConfig: hidden_size={hidden_size} must be divisible by "
                             f"num_attention_heads={num_attention_heads}")
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.hidden_act = intermediate_size, hidden_act
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.initializer_range, self.layer_norm_eps = initializer_range, layer_norm_eps
        self.position_embedding_type, self.classifier_dropout = position_embedding_type, classifier_dropout
        self.attention, self.form, self.chunk_size, self.backend = attention, form, chunk_size, backend
        self.feature_map, self.normalize, self.scale, self.attn_norm = feature_map, normalize, scale, attn_norm
        self.decay_horizon, self.drop_path_rate = list(decay_horizon), drop_path_rate
        for key, value in opts.items():
            setattr(self, key, value)
        self.compat = compat
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def base(cls, **kwargs) -> "LionBertConfig":
        """BERT-base sizes: 12 layers x 768 x 12 heads (about 110M parameters)."""
        return cls(**{**PRESETS["base"], **kwargs})

    @classmethod
    def large(cls, **kwargs) -> "LionBertConfig":
        """BERT-large sizes: 24 layers x 1024 x 16 heads (about 335M parameters)."""
        return cls(**{**PRESETS["large"], **kwargs})

    def mixer_options(self) -> dict:
        """Options for `build_attention` (through `Encoder`)."""
        attn_norm = self.attention == "lion-lit" if self.attn_norm == "auto" else bool(self.attn_norm)
        norm_eps = self.layer_norm_eps if self.attn_norm_eps is None else self.attn_norm_eps
        return dict(form=self.form, chunk_size=self.chunk_size, backend=self.backend, feature_map=self.feature_map,
                    normalize=self.normalize, scale=self.scale, attn_norm=attn_norm,
                    decay_horizon=tuple(self.decay_horizon), norm_eps=norm_eps, score_dropout=self.score_dropout,
                    decay_init=self.decay_init, gate=self.gate, gate_eps=self.gate_eps, gate_detach=self.gate_detach,
                    selective_mask=self.selective_mask, denominator_eps=self.denominator_eps)


_PAPER_OPTION_DEFAULTS = dict(position_embedding_type="absolute", post_norm=False, score_dropout=0.0,
                              decay_init="default", mlp_inner_dropout=True, attn_norm_eps=None, gate="sigmoid",
                              gate_eps=0.0, gate_detach=False, selective_mask="symmetric", denominator_eps=0.0)


def _check_paper_options(o: dict):
    """One clear error per bad value of the paper options (the mixer checks them again when it is built)."""
    for key, allowed in (("decay_init", DECAY_INITS), ("gate", GATES), ("selective_mask", SELECTIVE_MASKS)):
        if o[key] not in allowed:
            raise ValueError(f"LionBertConfig: {key}={o[key]!r} is unknown; use one of {allowed}")
    for key in ("post_norm", "mlp_inner_dropout", "gate_detach"):
        if not isinstance(o[key], bool):
            raise ValueError(f"LionBertConfig: {key} must be True or False, got {o[key]!r}")
    if not 0 <= o["score_dropout"] < 1:
        raise ValueError(f"LionBertConfig: score_dropout must lie in [0, 1), got {o['score_dropout']!r}")
    for key in ("gate_eps", "denominator_eps") + (("attn_norm_eps",) if o["attn_norm_eps"] is not None else ()):
        if not o[key] >= 0:
            raise ValueError(f"LionBertConfig: {key} must be >= 0, got {o[key]!r}")


class LionBertPreTrainedModel(PreTrainedModel):
    config_class = LionBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]

    @torch.no_grad()
    def _init_weights(self, module):
        """BERT's init (normal 0.02, zero biases, unit LayerNorms) and the LION decay initialisation."""
        std = self.config.initializer_range
        if isinstance(module, DecayGate):  # LION-S gate: normal weights, bias at the initial decays
            init.normal_(module.weight, mean=0.0, std=std)
            module.reset_bias(copy_=init.copy_)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LionAttention):
            module.reset_decay_parameters(copy_=init.copy_, normal_=init.normal_)

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        for m in self.modules():
            if isinstance(m, Encoder):
                m.set_grad_checkpointing(enable)

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Change the form of every LION mixer and record it in the config (weights and outputs unchanged)."""
        set_form(self, form, chunk_size, backend)
        self.config.form = form
        self.config.chunk_size = self.config.chunk_size if chunk_size is None else chunk_size
        self.config.backend = self.config.backend if backend is None else backend
        return self


class LionBertEmbeddings(nn.Module):
    """input_ids [B, L] (+ token_type_ids, position_ids) -> [B, L, hidden]."""

    def __init__(self, config: LionBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                                    if config.position_embedding_type == "absolute" else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        B, L, _ = x.shape
        if self.position_embeddings is not None:
            if position_ids is None:
                if L > self.position_embeddings.num_embeddings:
                    raise ValueError(f"LionBert: sequence length {L} exceeds max_position_embeddings="
                                     f"{self.position_embeddings.num_embeddings}; truncate the input or build the "
                                     "model with a larger max_position_embeddings")
                position_ids = torch.arange(L, device=x.device)[None]
            x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(B, L, dtype=torch.long, device=x.device)
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class LionBertModel(LionBertPreTrainedModel):
    """Embeddings -> shared Encoder -> (pooler on the first token).

    forward(input_ids [B, L], attention_mask [B, L], token_type_ids, position_ids, inputs_embeds,
    output_hidden_states) -> BaseModelOutputWithPooling(last_hidden_state [B, L, hidden], pooler_output [B, hidden]).
    """

    def __init__(self, config: LionBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = LionBertEmbeddings(config)
        self.encoder = Encoder(
            config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.attention,
            mlp_hidden=config.intermediate_size, drop_rate=config.hidden_dropout_prob,
            attn_drop_rate=config.attention_probs_dropout_prob, drop_path_rate=config.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
            act_layer=partial(_activation, config.hidden_act), post_norm=config.post_norm,
            final_norm=not config.post_norm, mlp_inner_dropout=config.mlp_inner_dropout, **config.mixer_options())
        self.pooler = LionBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_hidden_states=None, return_dict=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LionBertModel: pass exactly one of input_ids and inputs_embeds")
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        x, hidden = self.encoder.forward_blocks(x, attention_mask, return_hidden_states=True)
        x = self.encoder.norm(x)
        out = BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden[:-1]) + (x,) if output_hidden_states else None)
        return out if _return_dict(self.config, return_dict) else out.to_tuple()


class LionBertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class LionBertLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder (weight tied to the word embeddings): [B, L, hidden] -> [B, L, vocab]."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x):
        return self.decoder(self.LayerNorm(self.act(self.dense(x))))


class LionBertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = LionBertLMHead(config)

    def forward(self, x):
        return self.predictions(x)


class LionBertForMaskedLM(LionBertPreTrainedModel):
    """Masked-LM: logits [B, L, vocab]; loss = cross-entropy over labels != -100."""

    _tied_weights_keys = ({"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"} if _HF5
                          else ["cls.predictions.decoder.weight"])

    def __init__(self, config: LionBertConfig):
        super().__init__(config)
        self.bert = LionBertModel(config, add_pooling_layer=False)
        self.cls = LionBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=-100)
        res = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return res if _return_dict(self.config, return_dict) else res.to_tuple()


class LionBertForSequenceClassification(LionBertPreTrainedModel):
    """Pooled first token -> dropout -> linear: logits [B, num_labels].

    Loss as in transformers: regression (MSE) when problem_type == "regression" or num_labels == 1 (STS-B),
    cross-entropy for integer labels, BCE with logits for multi-label float targets.
    """

    def __init__(self, config: LionBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = LionBertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float() if self.num_labels == 1 else logits.float(),
                                  labels.float().view(-1) if self.num_labels == 1 else labels.float())
            elif self.config.problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        res = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return res if _return_dict(self.config, return_dict) else res.to_tuple()


def _activation(name: str) -> nn.Module:
    return ACT2FN[name]


def _return_dict(config, return_dict) -> bool:
    return return_dict if return_dict is not None else getattr(config, "return_dict", True)


def register():
    """Register `lion_bert` with the Auto classes (idempotent)."""
    AutoConfig.register("lion_bert", LionBertConfig, exist_ok=True)
    AutoModel.register(LionBertConfig, LionBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(LionBertConfig, LionBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(LionBertConfig, LionBertForSequenceClassification, exist_ok=True)


register()

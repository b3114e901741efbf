"""LION ViT in timm: every registered name, forms, timm round trips, parameter counts, the softmax twin."""
import pytest
import timm
import torch

import lion  # noqa: F401  (registers the models)
from lion.models import VIT_MODEL_NAMES, LionViT, decay_parameter_names
from lion.models.layers import initial_decays

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, num_classes=7)
EXPECTED = [f"{v}_{s}_patch16_224" for v in ("lion_lit", "lion_d", "lion_s", "lion_d_ms", "lion_s_ms", "softmax_vit")
            for s in ("tiny", "small", "base")]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_every_name_is_registered():
    assert sorted(VIT_MODEL_NAMES) == sorted(EXPECTED)
    assert set(EXPECTED) <= set(timm.list_models("lion_*") + timm.list_models("softmax_vit_*"))


@pytest.mark.parametrize("name", EXPECTED)
def test_builds_tiny_and_runs(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **{**TINY, "depth": 1}, drop_path_rate=0.1, form="chunk", chunk_size=4)
    assert isinstance(model, LionViT)
    assert model.pretrained_cfg["architecture"] == name and model.default_cfg == model.pretrained_cfg
    assert (model.num_classes, model.num_features, model.num_prefix_tokens) == (7, 32, 1)
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1 + 16, 32)
    assert model.forward_head(feats).shape == (2, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 32)


@pytest.mark.parametrize("variant", ["lion_lit", "lion_d", "lion_s", "lion_d_ms", "lion_s_ms"])
def test_forms_give_the_same_logits(variant):
    torch.manual_seed(0)
    model = timm.create_model(f"{variant}_tiny_patch16_224", **TINY, form="parallel").eval()
    with torch.no_grad():  # move the decays off their initial values
        for n, p in model.named_parameters():
            if "decay" in n:
                p.add_(torch.randn_like(p))
    x = torch.randn(2, 3, 24, 40)  # a 3 x 5 grid: 16 tokens with the class token
    with torch.no_grad():
        ref = model(x)
        for form, chunk in [("chunk", 3), ("chunk", 16), ("recurrent", None)]:
            model.set_form(form, chunk)
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
        built = timm.create_model(f"{variant}_tiny_patch16_224", **TINY, form="recurrent").eval()
        built.load_state_dict(model.state_dict())
        torch.testing.assert_close(built(x), ref, rtol=1e-5, atol=1e-5)


def test_timm_round_trip(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("lion_s_ms_tiny_patch16_224", **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    again = timm.create_model("lion_s_ms_tiny_patch16_224", **TINY, checkpoint_path=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())


def test_timm_utilities():
    model = timm.create_model("lion_d_tiny_patch16_224", **TINY)
    model.reset_classifier(3, global_pool="token")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    assert "cls_token" in model.no_weight_decay() and "blocks.0.attn.decay_logit" in model.no_weight_decay()
    assert model.get_classifier() is model.head
    lam = torch.sigmoid(model.blocks[1].attn.decay_logit.double())  # the ViT init keeps the decay initialisation
    torch.testing.assert_close(lam[0], initial_decays(2), rtol=1e-6, atol=0)
    model.set_grad_checkpointing(True)
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    from timm.optim import create_optimizer_v2
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_any_image_size_channels_and_position_embedding():
    model = timm.create_model("lion_s_ms_tiny_patch16_224", **{**TINY, "in_chans": 1}, pos_embed="learn").eval()
    assert model.pos_embed.shape == (1, 17, 32)
    for hw in [(32, 32), (16, 48), (8, 8)]:
        assert model(torch.randn(2, 1, *hw)).shape == (2, 7)
    with pytest.raises(ValueError, match="in_chans"):
        model(torch.randn(2, 3, 32, 32))
    no_cls = timm.create_model("lion_d_ms_tiny_patch16_224", **TINY, class_token=False)
    assert no_cls.num_prefix_tokens == 0 and no_cls(torch.randn(1, 3, 16, 24)).shape == (1, 7)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("lion_s_tiny_patch16_224", **TINY, global_pool="max")
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("lion_s_tiny_patch16_224", pretrained=True)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_parameter_counts_match_timm_vit(size):
    """Real sizes on the meta device: within 3% of timm's ViT; the softmax twin differs by the decay parameters."""
    with torch.device("meta"):
        ref = n_params(timm.create_model(f"vit_{size}_patch16_224"))
        counts = {v: n_params(timm.create_model(f"{v}_{size}_patch16_224"))
                  for v in ("lion_lit", "lion_d", "lion_s", "lion_d_ms", "lion_s_ms", "softmax_vit")}
    C, H = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}[size]
    for v, n in counts.items():
        assert abs(n - ref) / ref < 0.03, (v, n, ref)
    twin, depth = counts["softmax_vit"], 12
    assert counts["lion_lit"] == twin
    assert counts["lion_d"] - twin == depth * H
    assert counts["lion_d_ms"] - twin == depth * H * 2
    assert counts["lion_s"] - twin == depth * (C + 1) * H
    assert counts["lion_s_ms"] - twin == depth * (C + 1) * H * 2


def test_small_model_counts_about_22m():
    with torch.device("meta"):
        model = timm.create_model("lion_s_small_patch16_224")
    assert 21.5e6 < n_params(model) < 22.5e6
    assert len(decay_parameter_names(model)) == 2 * 12


def test_softmax_twin_loads_timm_vit_weights():
    """The softmax twin is timm's ViT when configured like it: same state-dict names, same logits."""
    torch.manual_seed(0)
    kw = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, num_classes=5)
    vit = timm.create_model("vit_tiny_patch16_224", **kw, global_pool="token").eval()
    twin = timm.create_model("softmax_vit_tiny_patch16_224", **kw, pos_embed="learn", global_pool="token").eval()
    missing, unexpected = twin.load_state_dict(vit.state_dict(), strict=False)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), vit(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lion_s_small_patch16_224", "lion_d_ms_small_patch16_224",
                                  "lion_s_ms_small_patch16_224"])
def test_real_size_forms_agree(name):
    """The issue's claim at the real size: a ~22M model gives the same logits in every form (float32, 1e-5)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "decay" in n:
                p.add_(torch.randn_like(p))
        x = torch.randn(1, 3, 224, 224)
        ref = model.set_form("parallel")(x)
        for form in ("chunk", "recurrent"):
            torch.testing.assert_close(model.set_form(form, 64)(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lion_s_ms_tiny_patch16_224", "softmax_vit_tiny_patch16_224"])
def test_features_only_and_forward_intermediates(name):
    """timm's feature API: features_only=True gives the chosen blocks' patch tokens as [B, C, h, w] maps, equal to
    the hidden states the encoder passes between its blocks (its own bookkeeping, an independent path); the final
    output of forward_intermediates is forward_features; pruning keeps what the indices need."""
    torch.manual_seed(0)
    kw = dict(depth=4, img_size=64, pos_embed="learn")
    full = timm.create_model(name, **kw).eval()
    feats = timm.create_model(name, features_only=True, out_indices=(1, -1), **kw).eval()
    missing, unexpected = feats.load_state_dict({f"model.{k}": v for k, v in full.state_dict().items()
                                                 if not k.startswith("head")}, strict=False)
    assert not missing and all(k.startswith("model.blocks.") or k == "model.norm.weight" or k == "model.norm.bias"
                               for k in unexpected)  # pruned: blocks after the last index
    assert feats.feature_info.channels() == [192, 192] and feats.feature_info.reduction() == [16, 16]
    x = torch.randn(2, 3, 64, 96)  # a 4 x 6 grid: rows and columns must not be swapped
    with torch.no_grad():
        maps = feats(x)
        tokens, grid = full.embed(x)
        _, hidden = full.forward_blocks(tokens, grid_size=grid, num_prefix_tokens=1, return_hidden_states=True)
        for got, block in zip(maps, (1, 3)):
            want = hidden[block + 1][:, 1:].reshape(2, 4, 6, 192).permute(0, 3, 1, 2)
            torch.testing.assert_close(got, want)
        final, inter = full.forward_intermediates(x, indices=2, output_fmt="NLC", return_prefix_tokens=True)
        torch.testing.assert_close(final, full.forward_features(x))
        assert len(inter) == 2 and inter[0][0].shape == (2, 24, 192) and inter[0][1].shape == (2, 1, 192)
        torch.testing.assert_close(inter[1][0], hidden[4][:, 1:])
        normed = full.forward_intermediates(x, indices=[0], norm=True, intermediates_only=True, stop_early=True)
        torch.testing.assert_close(normed[0], full.norm(hidden[1])[:, 1:].reshape(2, 4, 6, 192).permute(0, 3, 1, 2))
    assert full.prune_intermediate_layers([1]) == [1] and len(full.blocks) == 2 and full.num_classes == 0
    with pytest.raises(ValueError, match="indices"):
        full.forward_intermediates(x, indices=[5])

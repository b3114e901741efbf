"""LRA models: every task builds, padding equals removal, forms agree, retrieval towers, the softmax twin."""
import pytest
import torch

from lion.models import LRA_TASKS, LRAClassifier, LRARetrieval, create_lra_model
from lion.models.layers import initial_decays

SMALL = dict(dim=32, depth=2, num_heads=2, dropout=0.0)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def small(task, **kw):
    if LRA_TASKS[task]["input"] == "pixels":
        kw.setdefault("grid_size", (4, 6))  # a small image: 24 pixels
    return create_lra_model(task, vocab_size=30, seq_len=64, **SMALL, **kw).eval()


@pytest.mark.parametrize("task", sorted(LRA_TASKS))
def test_every_task_builds_and_runs(task):
    torch.manual_seed(0)
    model = small(task, attention="lion-s-ms" if task in ("image", "pathfinder", "pathx") else "lion-s")
    nc = LRA_TASKS[task]["num_classes"]
    hi = 256 if LRA_TASKS[task]["input"] == "pixels" else 30
    ids = torch.randint(1, hi, (2, 24))
    if task == "retrieval":
        assert isinstance(model, LRARetrieval)
        out = model(ids, torch.ones_like(ids), ids.flip(0), torch.ones_like(ids))
    else:
        assert isinstance(model, LRAClassifier)
        out = model(ids, torch.ones_like(ids))
    assert out.shape == (2, nc) and torch.isfinite(out).all()
    gate = next(m for m in model.modules() if hasattr(m, "reset_bias"))  # init keeps the decay initialisation
    torch.testing.assert_close(torch.sigmoid(gate.bias.double()), initial_decays(2).repeat(gate.num_scans),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("attention", ["lion-lit", "lion-d", "lion-s", "softmax"])
@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_padding_equals_removal(attention, pool):
    torch.manual_seed(0)
    model = small("listops", attention=attention, pool=pool)
    seqs = [torch.randint(1, 30, (n,)) for n in (20, 7, 1)]
    ids = torch.zeros(3, 20, dtype=torch.long)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, True
    with torch.no_grad():
        batch = model(ids, mask)
        for i, s in enumerate(seqs):
            torch.testing.assert_close(batch[i], model(s[None])[0], rtol=1e-5, atol=1e-5)


def test_retrieval_two_towers_and_padding():
    torch.manual_seed(0)
    model = small("retrieval", attention="lion-d")
    a, b = torch.randint(1, 30, (2, 12)), torch.randint(1, 30, (2, 9))
    with torch.no_grad():
        u, v = model.tower.encode(a), model.tower.encode(b)
        ref = model.head(torch.cat([u, v, u * v, u - v], dim=-1))
        torch.testing.assert_close(model(a, None, b, None), ref)  # different lengths: two passes
        b_pad = torch.cat([b, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # same length: one pass, padded
        mask_b = torch.cat([torch.ones(2, 9), torch.zeros(2, 3)], dim=1).bool()
        torch.testing.assert_close(model(a, torch.ones_like(a), b_pad, mask_b), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["lion-d", "lion-s-ms"])
def test_forms_agree(attention):
    torch.manual_seed(0)
    model = small("pathfinder", attention=attention, pool="cls", form="parallel")
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        ref = model(ids)
        for form, chunk in [("chunk", 5), ("recurrent", None)]:
            torch.testing.assert_close(model.set_form(form, chunk)(ids), ref, rtol=1e-5, atol=1e-5)


def test_softmax_twin_and_pixel_input():
    lion_s, twin = small("image", attention="lion-s"), small("image", attention="softmax")
    assert n_params(lion_s) - n_params(twin) == 2 * (32 + 1) * 2  # depth x (C + 1) x H
    ids = torch.randint(0, 256, (1, 24))
    with torch.no_grad():  # long pixel values are scaled by 1/255; float inputs are taken as given
        torch.testing.assert_close(lion_s(ids), lion_s(ids.float() / 255))


def test_builder_options_and_errors():
    m = create_lra_model(num_classes=3, vocab_size=10, dim=16, depth=1, num_heads=2, pos_embed="sincos")
    assert m(torch.randint(0, 10, (1, 300))).shape == (1, 3)  # sincos: any length
    assert isinstance(create_lra_model(num_classes=2, vocab_size=10, dim=16, depth=1, num_heads=2,
                                       retrieval=True), LRARetrieval)
    with pytest.raises(ValueError, match="unknown task"):
        create_lra_model("cifar")
    with pytest.raises(ValueError, match="vocab_size"):
        create_lra_model("text")
    with pytest.raises(ValueError, match="seq_len"):
        small("text")(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="pool"):
        small("text", pool="max")

"""lion.optim: the decoupled AdamW of the paper's masked-LM and GLUE runs, and the parameter-group choice.

The reference below is a literal float64 transcription of the rule (Composer's DecoupledAdamW): at each step,
p <- p * (1 - wd * lr_t / lr_0), then the bias-corrected Adam update with lr_t. It is written here, independently
of torch's AdamW that lion.optim.DecoupledAdamW reuses.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lion.optim import DecoupledAdamW, build_optimizer, param_groups
from lion.tasks.base import WarmupSchedule
from lion.run.checks import ConfigError


def reference_decoupled_adamw(p0, grads, lrs, lr0, wd, betas, eps):
    """Literal rule, float64, one parameter tensor; grads[t] and lrs[t] at step t (t = 0..T-1)."""
    b1, b2 = betas
    p = p0.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p * (1.0 - wd * lr / lr0)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p


@pytest.mark.parametrize("kind, warmup_lr", [("linear", 0.0), ("cosine", 1e-5)])
def test_decoupled_adamw_equals_the_literal_rule_over_a_schedule(kind, warmup_lr):
    torch.manual_seed(0)
    lr0, wd, betas, eps, steps, warmup = 8e-3, 3e-2, (0.9, 0.98), 1e-6, 40, 6  # large wd: the decay matters
    shapes = [(5, 3), (7,), (1,)]
    params = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    start = [p.detach().clone() for p in params]
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(steps)]
    opt = DecoupledAdamW(params, lr=lr0, betas=betas, eps=eps, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule(kind, steps, warmup, warmup_lr / lr0, 0.02))
    lrs = []
    for t in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        for p, g in zip(params, grads[t]):
            p.grad = g.clone()
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(warmup_lr) and max(lrs) == pytest.approx(lr0)  # warm-up, then decay
    assert lrs[-1] < 0.2 * lr0
    for i, p in enumerate(params):
        ref = reference_decoupled_adamw(start[i], [g[i] for g in grads], lrs, lr0, wd, betas, eps)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-13, atol=1e-14)
    # torch's AdamW with the same weight_decay (decay scaled by lr) ends elsewhere: the test can tell them apart
    q = [nn.Parameter(s.clone()) for s in start]
    plain = torch.optim.AdamW(q, lr=lr0, betas=betas, eps=eps, weight_decay=wd)
    plain_sched = torch.optim.lr_scheduler.LambdaLR(plain, WarmupSchedule(kind, steps, warmup, warmup_lr / lr0, 0.02))
    for t in range(steps):
        for p, g in zip(q, grads[t]):
            p.grad = g.clone()
        plain.step()
        plain_sched.step()
    assert not torch.allclose(q[0].detach(), params[0].detach(), rtol=1e-6, atol=1e-6)


def test_decoupled_adamw_state_dict_round_trip():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
    opt = DecoupledAdamW([w], lr=1e-3, weight_decay=1e-2)
    w.grad = torch.randn_like(w)
    opt.step()
    again = DecoupledAdamW([nn.Parameter(w.detach().clone())], lr=5.0, weight_decay=0.5)
    again.load_state_dict(opt.state_dict())
    g = again.param_groups[0]
    assert (g["initial_lr"], g["decoupled_wd"]) == (1e-3, 1e-2)
    assert g["weight_decay"] == pytest.approx(1e-2 / 1e-3)


def test_zero_initial_lr_with_decay_is_one_clear_error():
    with pytest.raises(ConfigError, match="positive model.optimizer.lr"):
        DecoupledAdamW([nn.Parameter(torch.zeros(2))], lr=0.0, weight_decay=1e-5)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


def test_param_groups_all_and_no_decay_norm_bias():
    net = Net()
    (everything,) = param_groups(net, 0.1, mode="all")
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == len(list(net.parameters()))
    decay, no_decay = param_groups(net, 0.1)
    assert [id(p) for p in decay["params"]] == [id(net.lin.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(net.emb.weight), id(net.lin.bias), id(net.norm.weight),
                                                   id(net.norm.bias)}
    with pytest.raises(ConfigError, match="param_groups='none'"):
        param_groups(net, 0.1, mode="none")
    with pytest.raises(ConfigError, match="model.optimizer.name='lamb'"):
        build_optimizer(net, {"name": "lamb", "weight_decay": 0.0}, 1e-3)


class Gated(Net):
    def __init__(self):
        super().__init__()
        self.decay_logit = nn.Parameter(torch.zeros(3))  # a LION-D decay parameter (no weight decay: ndim 1)
        self.decay_gate = nn.Linear(4, 3)                # a LION-S gate (weight decayed here: no fragment listed)


@pytest.mark.parametrize("name", ["adamw", "decoupled_adamw"])
def test_lr_mult_gives_matching_parameters_their_own_lr_through_the_schedule(name):
    net = Gated()
    o = {"name": name, "weight_decay": 0.05, "betas": (0.9, 0.999), "eps": 1e-8, "lr_mult": {"decay": 10}}
    opt = build_optimizer(net, o, 1e-3)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(net.decay_logit)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(net.decay_gate.weight)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(net.lin.weight)]["lr"] == pytest.approx(1e-3)
    # weight decay is decided as without lr_mult: the gate's weight keeps it, its bias and the logits do not
    wd = {k: g.get("decoupled_wd", g["weight_decay"]) for k, g in by_param.items()}  # as configured (decoupled: /lr0)
    assert wd[id(net.decay_gate.weight)] == wd[id(net.lin.weight)] == 0.05 and wd[id(net.decay_logit)] == 0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    # the schedule keeps the ratio at every step (warm-up from warmup_lr, cosine floor)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule("cosine", 20, 5, 1e-5 / 1e-3, 1e-5 / 1e-3))
    for _ in range(20):
        opt.step()
        sched.step()
        assert by_param[id(net.decay_logit)]["lr"] == pytest.approx(10 * by_param[id(net.lin.weight)]["lr"])


def test_lr_mult_mistakes_are_one_clear_error():
    net = Gated()
    with pytest.raises(ConfigError, match="no trainable parameter name contains 'decai'"):
        param_groups(net, 0.1, lr_mult={"decai": 10})
    with pytest.raises(ConfigError, match="lr_mult.decay=0"):
        param_groups(net, 0.1, lr_mult={"decay": 0})
    with pytest.raises(ConfigError, match="must map parameter-name fragments"):
        param_groups(net, 0.1, lr_mult=10)
    assert param_groups(net, 0.1, lr_mult={}) == param_groups(net, 0.1)


def test_mlm_paper_config_shrinks_a_zero_gradient_weight_by_the_expected_factor():
    """The MLM paper recipe's optimizer and schedule, on a one-block BERT: with every gradient zero the Adam update
    is zero and each weight (matrices, biases, norms, embeddings: param_groups=all) is multiplied by
    prod_t (1 - wd * s_t), s_t the schedule's multiplier (6% linear warm-up from 0, linear decay to 0.02)."""
    from lion.tasks import MaskedLM
    from lion.run.config import compose

    cfg = compose("train", ["experiment=paper/mlm_lion_d_base"])
    o = dict(cfg.model.optimizer)
    s = cfg.model.scheduler
    assert o["name"] == "decoupled_adamw" and o["param_groups"] == "all"
    wd, lr0 = float(o["weight_decay"]), float(o["lr"])
    steps = 200
    warmup = int(round(float(s.warmup_fraction) * steps))
    task = MaskedLM(attention="lion-d", size="custom", net=dict(hidden_size=16, num_hidden_layers=1,
                                                               num_attention_heads=2, intermediate_size=32,
                                                               vocab_size=50, max_position_embeddings=32)).double()
    opt = build_optimizer(task, o, lr0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule(s.name, steps, warmup, 0.0,
                                                                  float(s.final_lr_ratio)))
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    for _ in range(steps):
        for p in task.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
    # the schedule written out: step t < warmup: t / warmup; then 1 + (0.02 - 1) * (t - warmup) / (steps - warmup)
    mult = [t / warmup if t < warmup else 1 + (0.02 - 1) * (t - warmup) / (steps - warmup) for t in range(steps)]
    expected = math.prod(1.0 - wd * m for m in mult)
    assert expected < 1.0
    for n, p in task.named_parameters():
        ratio = p.detach() / before[n]
        ok = before[n] != 0
        torch.testing.assert_close(ratio[ok], torch.full_like(ratio[ok], expected), rtol=1e-12, atol=0, msg=n)
    assert 1 - expected > 5e-4  # the shrink is far above the tolerance
    # the whole paper run: 70,000 steps shrink a weight without gradient to about 0.70 of its value
    total = int(cfg.trainer.max_steps)
    w = int(round(float(s.warmup_fraction) * total))
    log_full = sum(math.log1p(-wd * (t / w if t < w else 1 + (0.02 - 1) * (t - w) / (total - w))) for t in range(total))
    assert math.exp(log_full) == pytest.approx(0.70, abs=0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_cuda_decoupled_adamw_follows_the_rule():
    """The path a GPU run takes (lion.tasks.base builds it with fused=True on CUDA): float32 on the device against the
    float64 literal rule."""
    torch.manual_seed(0)
    lr0, wd, betas, eps, steps, warmup = 8e-3, 3e-2, (0.9, 0.98), 1e-6, 30, 5
    start = torch.randn(64, 48, dtype=torch.float64)
    grads = [torch.randn(64, 48, dtype=torch.float64) for _ in range(steps)]
    p = nn.Parameter(start.float().cuda())
    opt = DecoupledAdamW([p], lr=lr0, betas=betas, eps=eps, weight_decay=wd, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule("linear", steps, warmup, 0.0, 0.02))
    lrs = []
    for t in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = grads[t].float().cuda()
        opt.step()
        sched.step()
    ref = reference_decoupled_adamw(start, grads, lrs, lr0, wd, betas, eps)
    torch.testing.assert_close(p.detach().double().cpu(), ref, rtol=1e-4, atol=1e-5)

"""Every paper and proxy experiment config composes with the framework's config tree, covers exactly one cell of
its table, carries the paper's recipe (the numbers below are transcribed from the paper and the authors' configs, not
read from the project's configs), and the rows of one table column differ only in the attention."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import lion.run  # noqa: F401  (config resolvers)
from lion.reproduce.proxy import TASK_ROWS
from lion.results.tables import load_paper

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = sorted(str(p.relative_to(CONFIGS / "experiment").with_suffix("")) for sub in ("paper", "proxy")
               for p in (CONFIGS / "experiment" / sub).glob("*.yaml"))


@pytest.fixture(scope="module")
def composed() -> dict[str, dict]:
    """name -> resolved config (with the Hydra sweeper params under '_sweep')."""
    GlobalHydra.instance().clear()
    out = {}
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        for name in NAMES:
            cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = f"/tmp/lion-test-runs/{name}"
            HydraConfig.instance().set_config(cfg)
            params = cfg.hydra.sweeper.get("params")
            sweep = OmegaConf.to_container(params) if params is not None else {}
            with open_dict(cfg):
                del cfg["hydra"]
            out[name] = {**OmegaConf.to_container(cfg, resolve=True), "_sweep": sweep}
    GlobalHydra.instance().clear()
    return out


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_cell_has_exactly_one_config(composed):
    paper = load_paper()["tables"]
    cells = {}
    for name, c in composed.items():
        t = c["table"]
        assert t is not None, f"{name}: no table node"
        spec = paper[t["id"]]
        tasks = TASK_ROWS if t["id"] == "P" else spec["tasks"]  # the proxy suite's pre-training task has no column
        assert t["row"] in spec["rows"] and t["scale"] in spec["scales"] and t["task"] in tasks, name
        assert t["row"] == c["model"]["attention"], name
        cells.setdefault((t["id"], t["row"], t["scale"], t["task"]), []).append(name)
    glue = [n for n in composed if n.startswith("paper/glue_")]
    assert sorted(n.split("_")[1] for n in glue) == sorted(paper["B"]["glue_tasks"])
    expected = {("A", r, s, "imagenet") for r in paper["A"]["rows"] for s in ("tiny", "small", "base")}
    expected |= {("B", r, s, "mlm") for r in paper["B"]["rows"] for s in ("base", "large")}
    expected |= {("C", r, "lra", t) for r in paper["C"]["rows"] for t in paper["C"]["tasks"]}
    expected |= {("P", r, "full", t) for t, rows in TASK_ROWS.items() for r in rows}
    assert set(paper["P"]["tasks"]) <= set(TASK_ROWS)
    non_glue = {k: v for k, v in cells.items() if not any(n in glue for n in v)}
    assert set(non_glue) == expected
    assert all(len(v) == 1 for v in non_glue.values()), {k: v for k, v in non_glue.items() if len(v) > 1}
    assert len(expected) == 18 + 8 + 24 + 30


def test_imagenet_configs_follow_the_deit_recipe(composed):
    runs = {n: c for n, c in composed.items() if n.startswith("paper/imagenet_")}
    assert len(runs) == 18
    for name, c in runs.items():
        m, d = c["model"], c["data"]
        assert c["trainer"]["max_epochs"] == 300 and c["global_batch_size"] == 1024, name
        assert m["optimizer"]["lr"] == 5e-4 and m["optimizer"]["lr_scale_batch"] == 512, name
        assert m["optimizer"]["weight_decay"] == 0.05 and m["optimizer"]["name"] == "adamw"
        s = m["scheduler"]
        assert (s["name"], s["warmup_epochs"], s["warmup_lr"], s["min_lr"]) == ("cosine", 5, 1e-6, 1e-5)
        assert m["net"]["drop_path_rate"] == 0.1 and m["net"]["patch_size"] == 16
        assert m["mixup"]["mixup_alpha"] == 0.8 and m["mixup"]["cutmix_alpha"] == 1.0
        assert m["label_smoothing"] == 0.1
        assert d["auto_augment"] == "rand-m9-mstd0.5-inc1" and d["color_jitter"] == 0.3
        assert d["interpolation"] == "bicubic" and d["re_prob"] == 0.25 and d["crop_pct"] == 0.875
        assert d["image_size"] == 224 and c["repeated_aug"] == 3
        assert c["callbacks"]["ema"]["decay"] == 0.99996
        assert c["trainer"]["precision"] == "bf16-mixed"
        assert m["size"] == c["table"]["scale"]


def test_mlm_and_glue_configs_follow_the_paper(composed):
    mlm = {n: c for n, c in composed.items() if n.startswith("paper/mlm_")}
    assert len(mlm) == 8
    for name, c in mlm.items():
        m, d, o = c["model"], c["data"], c["model"]["optimizer"]
        assert d["tokenizer"] == "bert-base-uncased" and d["seq_len"] == 128
        assert d["mlm_probability"] == 0.3 and d["eval_mlm_probability"] == 0.15
        assert c["global_batch_size"] == 4096 and c["trainer"]["max_steps"] == 70000
        assert o["lr"] == {"base": 8e-4, "large": 2e-4}[m["size"]], name
        assert tuple(o["betas"]) == (0.9, 0.98) and o["eps"] == 1e-6 and o["weight_decay"] == 1e-5
        s = m["scheduler"]
        assert (s["name"], s["warmup_fraction"], s["final_lr_ratio"]) == ("linear", 0.06, 0.02)
        assert m["net"]["feature_map"] == "none" and m["net"]["normalize"] is False
        # Composer's DecoupledAdamW on every parameter; the authors' BERT (post-norm, score dropout, their init)
        assert o["name"] == "decoupled_adamw" and o["param_groups"] == "all", name
        assert m["net"]["compat"] == "paper_code" and m["net"]["post_norm"] is True
        assert m["net"]["score_dropout"] == 0.1 and m["net"]["decay_init"] == "paper"
        assert c["trainer"]["precision"] == "bf16-mixed" and m["size"] == c["table"]["scale"]
    # The paper's GLUE fine-tuning settings (its configs; docs/REPRODUCE.md): task -> (epochs, batch, weight decay, seeds); lr 1e-5 for all
    glue = {"mnli": (3, 48, 5e-6, [19]), "rte": (2, 16, 1e-6, [19, 8364, 717, 10536, 90166]),
            "qqp": (5, 16, 3e-6, [19]), "qnli": (10, 16, 1e-6, [19]), "sst2": (3, 16, 3e-6, [19, 8364, 717]),
            "stsb": (8, 32, 3e-6, [19, 8364, 717, 10536, 90166]),
            "mrpc": (10, 32, 8e-6, [19, 8364, 717, 10536, 90166]), "cola": (10, 32, 1e-6, [19, 8364, 717, 10536])}
    for task, (epochs, batch, wd, seeds) in glue.items():
        c = composed[f"paper/glue_{task}"]
        assert c["data"]["task"] == task and c["data"]["max_length"] == 128
        assert c["trainer"]["max_epochs"] == epochs and c["data"]["batch_size"] == batch
        assert c["model"]["optimizer"]["lr"] == 1e-5 and c["model"]["optimizer"]["weight_decay"] == wd
        assert [int(s) for s in str(c["_sweep"]["seed"]).split(",")] == seeds and c["seed"] == seeds[0]
        # the encoder comes from the matching pre-training run (its deterministic run directory)
        mlm_run = composed[f"paper/mlm_lion_s_base"]["run_id"]
        assert c["model"]["pretrained"].endswith(f"/runs/{mlm_run}/hf")
        assert c["optimized_metric"] == "val/score"
        o = c["model"]["optimizer"]  # RTE: torch AdamW (optim_name: adamw in the authors' config)
        assert (o["name"], o["param_groups"]) == ("adamw" if task == "rte" else "decoupled_adamw", "all"), task
        assert c["callbacks"].get("model_checkpoint") is None  # the final weights are evaluated, nothing is picked


@pytest.mark.parametrize("prefix, allowed", [
    ("paper/lra_{task}_", set()),
    ("proxy/{task}_", {"model.net.pos_embed", "model.net.global_pool", "model.form"}),  # DeiT ViT; softmax form
    ("paper/imagenet_{task}", {"model.net.pos_embed", "model.net.global_pool"}),  # DeiT: learned pos., cls token
    ("paper/mlm_{task}", set())])
def test_rows_of_a_column_differ_only_in_the_attention(composed, prefix, allowed):
    groups: dict[tuple, list[dict]] = {}
    for name, c in composed.items():
        t = c["table"]
        if name.startswith(prefix.split("{")[0]) and not name.startswith("paper/glue"):
            groups.setdefault((t["id"], t["scale"], t["task"]), []).append(c)
    assert groups
    for key, cs in groups.items():
        assert len(cs) >= 4, key
        base = cs[0]
        for c in cs[1:]:
            a, b = flat(base), flat(c)
            assert set(a) == set(b), key
            diff = {k for k in a if a[k] != b[k]}
            diff -= {"experiment_name", "run_id", "table.row", "model.attention"}
            diff -= {k for k in diff if isinstance(a[k], str) and base["run_id"] in a[k]}  # run-dir paths
            if "model.pretrained" in diff:  # proxy fine-tuning: each row starts from its own row's pre-training
                assert all(f"/runs/proxy_mlm_{x['model']['attention'].replace('-', '_')}_{key[1]}-s0/hf" in
                           x["model"]["pretrained"] for x in (base, c)), key
                diff.discard("model.pretrained")
            if "softmax" in (base["model"]["attention"], c["model"]["attention"]):
                diff -= allowed
            assert not diff, (key, {k: (a[k], b[k]) for k in diff})


def test_lra_configs_use_the_lra_lengths(composed):
    # The paper's Table C: ListOps 2000, Text 4096, Retrieval 2 x 4000, Image 1024, Pathfinder 32 x 32, Path-X 128 x 128
    lengths = {"listops": ("seq_len", 2000), "text": ("seq_len", 4096), "retrieval": ("seq_len", 4000),
               "pathfinder": ("resolution", 32), "pathx": ("resolution", 128)}
    for name, c in composed.items():
        if name.startswith("paper/lra_"):
            task = c["table"]["task"]
            assert c["model"]["lra_task"] == task
            if task in lengths:
                key, value = lengths[task]
                assert c["data"][key] == value, name
            assert c["trainer"]["precision"] == "bf16-mixed"

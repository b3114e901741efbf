"""Every experiment config (configs/experiment/**, the paper rows included) runs one tiny training step.

Tiny overrides keep what an experiment decides (task module, attention, recipe: optimizer, schedule, mixup, EMA,
global batch, callbacks) and shrink what costs time: the model (one block, width 16), the data (the offline set of
the same task family, a few examples), the trainer (CPU, fast_dev_run: one training and one validation batch).
"""
from __future__ import annotations

import random

import pytest
from omegaconf import OmegaConf, open_dict

from lion.run.config import compose, group_options

# every runnable cell; the recipes under */recipe/ are run through their cells (tests/test_recipes.py)
EXPERIMENTS = [e for e in group_options("experiment") if "/recipe/" not in e]
SMALL_NET = {
    "lion.tasks.ImageClassification": {"embed_dim": 16, "depth": 1, "num_heads": 2},
    "lion.tasks.MaskedLM": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                            "intermediate_size": 32, "max_position_embeddings": 64},
    "lion.tasks.SequenceClassification": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "intermediate_size": 32, "max_position_embeddings": 64},
    "lion.tasks.LRAClassification": {"dim": 16, "depth": 1, "num_heads": 2},
    "lion.tasks.distill.Distillation": {},  # the student is the teacher's twin (all-MiniLM-L6-v2, 6 x 384)
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Small offline inputs for the LRA families: ListOps and retrieval TSVs, Pathfinder PNGs."""
    from lion.data.generators.listops import write_listops
    from lion.data.generators.pathfinder import write_pathfinder

    root = tmp_path_factory.mktemp("tiny_data")
    write_listops(root / "listops", 8, 4, 4, min_len=10, max_len=60, seed=0, progress=False)
    write_pathfinder(root / "pathfinder", 16, size=32, seed=0, progress=False)
    rng = random.Random(0)
    (root / "aan").mkdir()
    for split in ("train", "eval", "test"):
        lines = [f"{i % 2}\tp{i}\tq{i}\t{'ab ' * rng.randint(3, 20)}\t{'cd ' * rng.randint(3, 20)}" for i in range(8)]
        (root / "aan" / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_data_node(cfg, data_dir, tiny) -> dict:
    target, lra_task = cfg.model._target_, cfg.model.get("lra_task")
    common = {"data_dir": str(data_dir), "batch_size": 4, "num_workers": 0}
    if target == "lion.tasks.ImageClassification":  # 2 x 2 patches
        return {"_target_": "lion.data.DigitsDataModule", "image_size": 2 * cfg.model.net.patch_size, **common}
    if target == "lion.tasks.MaskedLM":
        return {"_target_": "lion.data.MLMDataModule", "source": "hamlet", "seq_len": 32, "packing": True, **common}
    if target == "lion.tasks.distill.Distillation":
        return {"_target_": "lion.data.UnlabeledDataModule", "source": "hamlet", "max_length": 32, **common}
    if target == "lion.tasks.SequenceClassification":
        return {"_target_": "lion.data.RottenTomatoesDataModule", "max_length": 32, **common}
    key = (lra_task or "").replace("_", "")
    if key == "retrieval":
        return {"_target_": "lion.data.LRARetrievalDataModule", "root": str(tiny / "aan"), "seq_len": 64, **common}
    if key in ("image", "pathfinder", "pathx"):
        return {"_target_": "lion.data.PathfinderDataModule", "root": str(tiny / "pathfinder"), "resolution": 32,
                "num_proc": 1, **common}
    return {"_target_": "lion.data.ListOpsDataModule", "root": str(tiny / "listops"), "seq_len": 64, **common}


def tiny_config(name: str, log_dir, data_dir, tiny):
    cfg = compose("train", [f"experiment={name}", f"paths.log_dir={log_dir}", f"paths.data_dir={data_dir}",
                            "trainer=cpu", "logger=csv"])
    OmegaConf.resolve(cfg)  # names and paths as the experiment defines them, before its data is swapped
    target = cfg.model._target_
    with open_dict(cfg):
        cfg.data = tiny_data_node(cfg, data_dir, tiny)
        for k, v in SMALL_NET[target].items():
            cfg.model.net[k] = v
        if "size" in cfg.model and target != "lion.tasks.ImageClassification":
            cfg.model.size = cfg.model.size if cfg.model.family == "lra" else "custom"
        if cfg.model.get("pretrained") is not None:
            cfg.model.pretrained = None
        if cfg.model.get("lra_task") in ("image", "pathfinder", "pathx"):
            cfg.model.net.grid_size = [32, 32]
        steps = 1
        if cfg.global_batch_size is not None:  # keep gradient accumulation in the path: 2 micro-batches of 4
            cfg.global_batch_size, steps = 8, 2
        cfg.trainer.fast_dev_run = steps
        cfg.trainer.enable_progress_bar = False
    return cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_tiny_step(name, tmp_path, tiny_data, tmp_path_factory):
    from lion.pipeline import train

    data_dir = tmp_path_factory.getbasetemp() / "experiment_data_cache"
    cfg = tiny_config(name, tmp_path, data_dir, tiny_data)
    payload = train(cfg)
    assert payload["status"] == "finished" and payload["global_step"] >= 1
    assert payload["model"]["params"] > 0
    table = OmegaConf.select(cfg, "table")
    assert payload["table"] == (None if table is None else OmegaConf.to_container(table))

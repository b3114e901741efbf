"""One home per recipe: every table cell of configs/experiment/{paper,proxy}/ is its recipe (a file under recipe/)
plus a small delta (attention, size, the table node; GLUE: the task's settings), and composes to exactly that."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lion.utils.config import CONFIG_DIR, compose

EXP = CONFIG_DIR / "experiment"
CELLS = sorted(str(p.relative_to(EXP).with_suffix("")) for sub in ("paper", "proxy") for p in (EXP / sub).glob("*.yaml"))
RECIPES = sorted(str(p.relative_to(EXP).with_suffix("")) for p in EXP.rglob("recipe/*.yaml"))

# what a cell may set on top of its recipe, per family (dotted keys; a key covers everything below it)
DELTA = {
    "imagenet": {"table", "model.attention", "model.size", "data.batch_size",  # per-device batch of ViT-base
                 "model.net.pos_embed", "model.net.global_pool"},              # the softmax twin is DeiT proper
    "mlm": {"table", "model.attention"},
    "lra": {"table", "model.attention"},
    "glue": {"seed", "data.task", "data.batch_size", "trainer.max_epochs", "model.optimizer.weight_decay",
             "model.optimizer.name"},  # RTE keeps torch AdamW, as the authors' config
    "proxy": {"table", "model.attention"},
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
    assert len(CELLS) == 18 + 8 + 24 + 16 + 8  # Tables A, B (MLM), C, P and the eight GLUE tasks
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
    # GLUE reports the final weights: no checkpoint is picked on the validation split it reports
    assert compose("train", ["experiment=paper/glue_cola"]).callbacks.get("model_checkpoint") is None

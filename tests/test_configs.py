"""Every config composes and resolves; every user mistake the configs allow stops with one line naming the key.

Composition uses Hydra's compose API over every option of every group (nested ones such as model=vit/lion_s_tiny
and experiment=paper/... included). Objects that can be built on a CPU (callbacks, loggers, CPU trainers) are built.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf, open_dict

from lion.run.checks import ConfigError, check_accumulation, check_config, check_image_size
from lion.run.config import CONFIG_DIR, compose, group_options, resolved

ROOT = CONFIG_DIR.parent
HAS_OPTUNA_SWEEPER = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
# experiment/** is composed (and run) by tests/test_train_experiments.py
GROUPS = ["data", "model", "trainer", "callbacks", "logger", "launcher", "hparams_search", "paths", "debug"]
CASES = [(g, o) for g in GROUPS for o in group_options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    if group == "hparams_search" and not HAS_OPTUNA_SWEEPER:
        pytest.skip("hydra-optuna-sweeper is optional (pip install hydra-optuna-sweeper)")
    overrides = [f"{group}={option}", f"paths.log_dir={tmp_path}"]
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra.compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        hydra_node = cfg.pop("hydra")
    plain = resolved(cfg)
    assert plain["run_id"] and plain["paths"]["run_dir"].endswith(plain["run_id"])
    assert plain["model"]["_target_"].startswith("lion.tasks.")
    for key in ("attention", "form", "chunk_size"):  # plain keys, so model.form=recurrent works
        assert key in plain["model"] or plain["model"].get("timm_name"), key
    # the launcher / sweeper part resolves too (against the job config)
    node = {k: OmegaConf.to_container(hydra_node[k]) for k in ("launcher", "sweeper", "sweep", "run", "job")}
    node["job"]["name"] = "train"
    both = OmegaConf.create({**OmegaConf.to_container(cfg), "hydra": node})
    OmegaConf.to_container(both.hydra, resolve=True)
    if group == "callbacks":
        from lion.run.instantiate import instantiate_callbacks
        instantiate_callbacks(cfg.callbacks, tmp_path)
    if group == "logger" and option != "none":
        from lion.run.instantiate import instantiate_loggers
        os.environ.setdefault("WANDB_MODE", "offline")
        for lg in instantiate_loggers(cfg.logger, tmp_path):
            assert lg.save_dir is None or str(tmp_path) in str(lg.save_dir)
    if group == "trainer" and option in ("default", "cpu", "ddp_cpu"):
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False,
                                          enable_progress_bar=False)
        assert trainer.world_size == (2 if option == "ddp_cpu" else 1)
    if group == "trainer" and option == "fsdp":  # the strategy object (the trainer itself needs GPUs)
        from lightning.pytorch.strategies import FSDPStrategy
        from lion.models.layers import Block
        strategy = hydra.utils.instantiate(cfg.trainer.strategy)
        assert isinstance(strategy, FSDPStrategy) and Block in strategy.kwargs["auto_wrap_policy"]._module_classes


def test_eval_config_composes_with_form_overrides():
    cfg = compose("eval", ["ckpt_path=/x/checkpoints/best.ckpt", "model.form=recurrent", "model.chunk_size=8",
                           "split=val", "data.batch_size=4"])
    assert cfg.model.form == "recurrent" and cfg.model.chunk_size == 8 and cfg.data.batch_size == 4


def test_model_form_and_chunk_size_are_plain_overrides():
    cfg = compose("train", ["model=vit/lion_d_ms_small", "model.form=recurrent", "model.chunk_size=16"])
    assert (cfg.model.attention, cfg.model.size, cfg.model.form, cfg.model.chunk_size) == \
        ("lion-d-ms", "small", "recurrent", 16)
    assert cfg.experiment_name == "mnist_lion_d_ms" and cfg.run_id == "mnist_lion_d_ms-s0"


def test_run_id_is_deterministic_and_includes_seed():
    a = compose("train", ["seed=3"])
    b = compose("train", ["seed=3"])
    assert a.run_id == b.run_id == "mnist_lion_s-s3"
    assert a.paths.run_dir == os.path.join(a.paths.log_dir, "runs", a.run_id)


# ---------------------------------------------------------------------------------------------- bad values


def _one_line_error(overrides):
    with pytest.raises(ConfigError) as e:
        check_config(compose("train", overrides))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_attention_names_key_and_choices():
    msg = _one_line_error(["model.attention=lion-x"])
    assert "model.attention='lion-x'" in msg
    for name in ("lion-lit", "lion-d", "lion-s", "lion-d-ms", "lion-s-ms", "softmax"):
        assert name in msg


@pytest.mark.parametrize("value", ["0", "-4"])
def test_bad_chunk_size(value):
    msg = _one_line_error([f"model.chunk_size={value}"])
    assert f"model.chunk_size={value}" in msg and "positive integer" in msg


def test_unknown_form_and_softmax_recurrent():
    assert "model.form='sideways'" in _one_line_error(["model.form=sideways"])
    assert "softmax attention has only the parallel form" in _one_line_error(
        ["model.attention=softmax", "model.form=recurrent"])


def test_image_size_not_multiple_of_patch():
    assert "model.net.img_size=30" in _one_line_error(["model.net.img_size=30", "model.net.patch_size=4"])


def test_missing_data_path_is_one_line():
    msg = _one_line_error(["data=lra_listops", "model=lra", "+data.train_file=/nonexistent/listops.tsv"])
    assert "data.train_file='/nonexistent/listops.tsv' does not exist" in msg
    # a missing data root is the data module's to report, with the folder it looked in and the command that makes it
    import hydra as _hydra

    from lion.data.common import DataNotFoundError
    dm = _hydra.utils.instantiate(compose("train", ["data=lra_listops", "model=lra",
                                                    "data.root=/nonexistent/listops"]).data)
    with pytest.raises(DataNotFoundError, match="/nonexistent/listops") as e:
        dm.prepare_data()
    assert "scripts/make_listops.py" in str(e.value)


def test_wrong_image_size_for_fixed_size_model():
    import timm
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=10)  # strict 224 px input
    with pytest.raises(ConfigError) as e:
        check_image_size(net, 32)
    assert "data.image_size=32" in str(e.value) and "224" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not divisible by the model's patch size 16"):
        check_image_size(net, 100)
    check_image_size(net, 224)


def test_global_batch_accumulation():
    assert check_accumulation(None, 32, 4) == 1
    assert check_accumulation(1024, 128, 2) == 4
    with pytest.raises(ConfigError, match="global_batch_size=1000 is not a multiple"):
        check_accumulation(1000, 128, 2)


def test_cli_prints_one_line_before_training(tmp_path):
    """The real command: status 2, one line on stderr naming the key, no training started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path}", "model.chunk_size=0"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert lines == ["config error: model.chunk_size=0: must be a positive integer (for example "
                     "model.chunk_size=64)"], p.stderr[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_missing_data_stops_with_one_line_before_the_model_is_built(tmp_path, capsys, caplog):
    from lion.pipeline import train
    from lion.run.checks import run_or_exit

    cfg = compose("train", [f"paths.log_dir={tmp_path}", "data=lra_listops", "model=lra",
                            f"data.lra_dir={tmp_path}/nowhere"])
    with pytest.raises(SystemExit) as e:
        run_or_exit(train, cfg)
    assert e.value.code == 2
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.startswith(("data error", "config error"))]
    assert len(err) == 1 and err[0].startswith("data error: ListOps data") and "make_listops.py" in err[0]
    assert not any("parameters; global batch" in r.getMessage() for r in caplog.records)  # no model was built
    assert not list(tmp_path.rglob("*.ckpt"))

"""Cache plumbing and the data configs."""
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

import lion.data
from lion.data.common import atomic_dir, cache_path, options_hash

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "data").glob("*.yaml"))


def test_atomic_dir_commits_whole_or_nothing(tmp_path):
    final = cache_path(tmp_path, "x", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_dir(final, {"a": 1}) as tmp:
            (tmp / "part.npy").write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert list((tmp_path / "cache").iterdir()) == []
    with atomic_dir(final, {"a": 1}) as tmp:
        (tmp / "data").write_text("ok")
    assert (final / "data").read_text() == "ok" and (final / "options.json").exists()
    with atomic_dir(final, {"a": 1}) as tmp:  # a concurrent writer finishing second is discarded
        (tmp / "data").write_text("second")
    assert (final / "data").read_text() == "ok" and len(list((tmp_path / "cache").iterdir())) == 1


def test_options_hash_is_order_free_and_sensitive():
    assert options_hash({"a": 1, "b": [1, 2]}) == options_hash({"b": [1, 2], "a": 1})
    assert options_hash({"a": 1}) != options_hash({"a": 2})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_data_configs_instantiate(path, tmp_path):
    node = OmegaConf.load(path)
    assert node._target_.startswith("lion.data.") and node._target_.split(".")[-1] in lion.data.__all__
    assert "${paths.data_dir}" in OmegaConf.to_yaml(node)
    cfg = OmegaConf.merge({"paths": {"data_dir": str(tmp_path)}}, {"data": node})
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert dm.data_dir == tmp_path and dm.batch_size >= 1
    # what the task sizes itself from: classes or a vocabulary; unlabeled data (distillation): its inputs' shape
    assert hasattr(dm, "num_classes") or hasattr(dm, "vocab_size") or (
        type(dm).__name__.startswith("Unlabeled") and hasattr(dm, "image_size") and hasattr(dm, "in_chans"))

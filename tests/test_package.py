"""The package's layers: `import lion.ops` needs only torch, `import lion` is instant, and the models still register
with timm and transformers whichever is imported first (a fresh interpreter per case)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lion.run.config import CONFIG_DIR

ROOT = CONFIG_DIR.parent


def _py(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_import_lion_ops_loads_neither_timm_nor_transformers():
    out = _py("""
        import sys
        import lion.ops
        from lion.results import tables
        print(sorted(m for m in ("timm", "transformers", "lightning", "hydra") if m in sys.modules))
    """)
    assert out.strip() == "[]"


@pytest.mark.parametrize("order", ["lion first", pytest.param("timm first", marks=pytest.mark.slow),
                                   pytest.param("transformers first", marks=pytest.mark.slow)])
def test_models_register_whichever_is_imported_first(order):
    first = {"lion first": "import lion\nimport timm\nimport transformers",
             "timm first": "import timm\nimport lion\nimport transformers",
             "transformers first": "import transformers\nimport lion\nimport timm"}[order]
    out = _py(first + """
import timm
from transformers import AutoConfig
print("lion_s_tiny_patch16_224" in timm.list_models("lion_*"), AutoConfig.for_model("lion_bert").model_type)
""")
    assert out.split() == ["True", "lion_bert"]


def test_old_run_layer_imports_keep_working():
    out = _py("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from lion.utils.config import compose
            from lion.utils.run import check_run_id
        import lion.run.config, lion.run.rundir
        print(compose is lion.run.config.compose, check_run_id is lion.run.rundir.check_run_id,
              any(issubclass(x.category, DeprecationWarning) for x in w))
    """)
    assert out.split() == ["True", "True", "True"]

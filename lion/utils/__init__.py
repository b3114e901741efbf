"""Deprecated: the run layer is `lion.run` now (`lion.utils.run` is `lion.run.rundir`). Importing `lion.utils.X`
keeps working for existing code and notebooks, with a DeprecationWarning."""
import importlib
import sys
import warnings

warnings.warn("lion.utils is now lion.run (lion.utils.run is lion.run.rundir); update the import",
              DeprecationWarning, stacklevel=2)
for _name, _target in (("checks", "checks"), ("config", "config"), ("instantiate", "instantiate"),
                       ("resumable", "resumable"), ("checkpoint", "checkpoint"), ("loggers", "loggers"),
                       ("threads", "threads"), ("quiet", "quiet"), ("summary", "summary"), ("run", "rundir")):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"lion.run.{_target}")
    globals()[_name] = sys.modules[f"{__name__}.{_name}"]

from lion.run import ConfigError, check_config, register_resolvers  # noqa: E402,F401

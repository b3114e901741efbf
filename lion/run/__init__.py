"""The run layer: what turns a config into a safe, resumable run.

    checks       config checks before anything touches the disk (one line per mistake)
    rundir       the run directory: run_id, lock, resume checkpoint, config.yaml, metrics.json (and the resolvers)
    checkpoint   atomic checkpoint writes, damaged checkpoints set aside
    config       compose the configs from Python (notebooks, tests)
    instantiate  task module, callbacks and loggers from config nodes
    resumable    the training loader that resumes mid-epoch exactly
    loggers      the CSV logger that survives resumes
    threads      the CPU thread policy;  quiet: third-party noise;  summary: curves.png and the end-of-run summary

Importing registers the config resolvers.
"""
from lion.run.checks import ConfigError, check_config
from lion.run.rundir import register_resolvers

register_resolvers()

__all__ = ["ConfigError", "check_config", "register_resolvers"]

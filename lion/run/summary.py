"""The end of a run: training and validation curves as a PNG in the run directory, and a short summary that says
where everything is and what to run next."""
from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v, s = r.get(key), r.get("step")
        if v in (None, "") or s in (None, ""):
            continue
        try:
            y, x = float(v), float(s)
        except ValueError:
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def plot_curves(run_dir: Path, out_name: str = "curves.png") -> Path | None:
    """Loss (training steps and validation) and every validation metric against the optimizer step, from the run's
    `csv/metrics.csv`; None if there is nothing to plot."""
    rows = _read_csv(Path(run_dir) / "csv" / "metrics.csv")
    if not rows:
        return None
    keys = list(rows[0].keys())
    train_loss = next((k for k in ("train/loss_step", "train/loss", "train/loss_epoch") if k in keys), None)
    val_metrics = [k for k in keys if k.startswith("val/") and k != "val/loss"]
    if train_loss is None and "val/loss" not in keys:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = 1 + bool(val_metrics)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    if train_loss:
        ax.plot(*_series(rows, train_loss), label=train_loss, lw=1, alpha=0.8)
    if "val/loss" in keys:
        ax.plot(*_series(rows, "val/loss"), "o-", label="val/loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if val_metrics:
        ax = axes[0][1]
        for k in val_metrics:
            ax.plot(*_series(rows, k), "o-", label=k, lw=1.5)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation metric")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    out = Path(run_dir) / out_name
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def command_line() -> str:
    """The command that started this process, with Hydra's overrides (for 'run it again' lines)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
            return " ".join(["python train.py", *map(shlex.quote, overrides)])
    except Exception:  # noqa: BLE001
        pass
    return "python train.py <the same overrides>"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_text(payload: dict, run_dir: Path, wall_seconds: float, curves: Path | None) -> str:
    """The block printed at the end of `train.py`."""
    m = payload.get("metrics") or {}
    main = [k for k in m if k.split("/")[-1] in ("acc", "mlm_acc", "score", "glue", "mcc", "f1", "spearman",
                                                  "pearson", "loss")]
    metrics = "  ".join(f"{k} {_fmt(m[k])}" for k in sorted(main or m))
    tp = payload.get("throughput") or {}
    rate = tp.get("train_samples_per_s")
    best = payload.get("best_ckpt")
    best_path = Path(run_dir) / best if best else None
    lines = [
        "",
        f"── run finished: {Path(run_dir).name} " + "─" * max(3, 60 - len(Path(run_dir).name)),
        f"  run dir      {run_dir}",
        f"  best ckpt    {best_path if best_path else '(none)'}",
        f"  wall time    {wall_seconds:.0f} s after start-up (fitting {payload.get('fit_seconds', 0):.0f} s, "
        f"{payload.get('epochs', 0)} epochs, {payload.get('global_step', 0)} steps)",
        f"  throughput   {f'{rate:.1f} samples/s' if rate else 'not measured'} on {payload.get('device')}",
        f"  metrics      {metrics or '(none)'}",
        f"  curves       {curves if curves else '(no metrics logged)'}",
        "  next:",
    ]
    if best_path:
        lines.append(f"    evaluate in another form   python eval.py ckpt_path={best_path} model.form=recurrent")
    lines += [f"    run it again / resume      {command_line()}   (the same command resumes; resume=false restarts)",
              f"    tables of all runs         python scripts/make_tables.py --runs {Path(run_dir).parent.parent}"]
    return "\n".join(lines)

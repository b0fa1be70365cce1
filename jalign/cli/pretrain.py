"""``jalign pretrain``: retrain the shipped small LM — a shortcut for the trainer's config ``pretrain_small``.

``jalign pretrain --out DIR [key=value ...]`` runs ``jalign train --config pretrain_small`` with
``workdir=DIR/run`` and ``train.export=DIR/hf``, then writes ``DIR/loss_curve.json`` (training loss per step,
held-out loss per evaluation) from the run's metrics; ``--export-assets DIR2`` also copies the model and the
curve (with its plot) into ``DIR2`` (``jalign/assets/small_lm`` in a checkout).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

CONFIG = "pretrain_small"


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the small causal LM on offline text (the trainer in SFT mode)")
    p.add_argument("--out", required=True, help="output directory: run/ (trainer workdir), hf/, loss_curve.json")
    p.add_argument("--config", default=CONFIG, help=f"a trainer config file or shipped name (default {CONFIG})")
    p.add_argument("--steps", type=int, help="shortcut for the override train.steps=N")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, as for `jalign train`")
    p.add_argument("--export-assets", metavar="DIR",
                   help="also copy hf/config.json, hf/model.safetensors, loss_curve.json (+ .png) into DIR")
    p.set_defaults(func=run)


def loss_curve(cfg, history: list[dict], wall_s: float) -> dict:
    """The pretraining record: per-step training loss, held-out loss per evaluation, sizes and settings."""
    train = [[int(h["step"]), float(h["loss"])] for h in history if "loss" in h]
    val = [[int(h["step"]), float(h["eval/nll"])] for h in history if "eval/nll" in h]
    last = [v for _, v in train[-50:]]
    return {
        "config": json.loads(cfg.to_json()), "train": train, "val": val,
        "tokens_per_step": int(cfg.data.batch_size * (cfg.data.seq_len - 1)),
        "wall_s": wall_s,
        "final_train_loss_avg_last50": sum(last) / max(len(last), 1),
        "final_val_loss": val[-1][1] if val else None,
    }


def run(args) -> int:
    from jalign.models import load_pretrained
    from jalign.plotting import plot_loss_curve
    from jalign.train.config import ConfigError, load_config
    from jalign.train.loop import train

    out = Path(args.out)
    overrides = [*args.overrides, f"workdir={out / 'run'}", f"train.export={out / 'hf'}"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"jalign pretrain: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = train(cfg)
    curve = loss_curve(cfg, result.history, time.perf_counter() - t0)
    curve["n_params"] = load_pretrained(out / "hf").cfg.num_params()
    (out / "loss_curve.json").write_text(json.dumps(curve, indent=1))
    print(json.dumps({k: curve[k] for k in ("n_params", "final_val_loss", "final_train_loss_avg_last50",
                                            "wall_s")}))
    if args.export_assets:
        dst = Path(args.export_assets)
        dst.mkdir(parents=True, exist_ok=True)
        for src in (out / "hf" / "config.json", out / "hf" / "model.safetensors", out / "loss_curve.json"):
            shutil.copy(src, dst / src.name)
        plot_loss_curve(dst / "loss_curve.json", dst / "loss_curve.png")
        print(f"exported to {dst}", file=sys.stderr)
    return 0

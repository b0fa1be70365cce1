"""``jalign pretrain``: train the small byte-level LM (or any ml_collections config) on offline text."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "pretrain_small.py"


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a small causal LM on CPU (default: the shipped small LM)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="python file defining get_config()")
    p.add_argument("--out", required=True, help="output directory (hf/, orbax/, loss_curve.json)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (value parsed as JSON if possible)")
    p.add_argument("--export-assets", metavar="DIR",
                   help="also copy hf/config.json, hf/model.safetensors and loss_curve.json into DIR")
    p.set_defaults(func=run)


def load_config(path: str):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--config {path}: file not found")
    spec = importlib.util.spec_from_file_location(f"_jalign_config_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise ValueError(f"--config {path}: defines no get_config()")
    return mod.get_config()


def apply_override(cfg, item: str) -> None:
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node:
            raise KeyError(f"--set {key}: no config field {p!r}")
        node = node[p]
    if parts[-1] not in node:
        raise KeyError(f"--set {key}: no config field {parts[-1]!r}")
    node[parts[-1]] = value


def run(args) -> int:
    from jalign.models.pretrain import train

    cfg = load_config(args.config)
    for item in args.set:
        apply_override(cfg, item)
    if args.steps is not None:
        cfg.train.steps = args.steps
    out = Path(args.out)
    _, hist = train(cfg, out, log=lambda s: print(s, flush=True))
    print(json.dumps({k: hist[k] for k in ("n_params", "final_val_loss", "final_train_loss_avg_last50", "wall_s")}))
    if args.export_assets:
        dst = Path(args.export_assets)
        dst.mkdir(parents=True, exist_ok=True)
        for src in (out / "hf" / "config.json", out / "hf" / "model.safetensors", out / "loss_curve.json"):
            shutil.copy(src, dst / src.name)
        from jalign.models.pretrain import plot_loss_curve

        plot_loss_curve(dst / "loss_curve.json", dst / "loss_curve.png")
        print(f"exported to {dst}", file=sys.stderr)
    return 0

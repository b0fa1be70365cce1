"""``jalign train --config experiments/NAME.py [key=value ...]``: run a training configuration."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model from an experiments/ config (SFT, preference, online)")
    p.add_argument("--config", required=True, help="a Python file defining get_config() (ml_collections)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.steps=20 optim.lr=1e-4")
    p.add_argument("--workdir", help="output directory (same as the override workdir=...)")
    p.add_argument("--coordinator", help="multi-host: coordinator host:port (or env JALIGN_COORDINATOR)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from jalign.train.config import load_config

    overrides = list(args.overrides)
    if args.workdir:
        overrides.append(f"workdir={args.workdir}")
    if args.coordinator:
        overrides.append(f"distributed.coordinator={args.coordinator}")
    if args.num_processes is not None:
        overrides.append(f"distributed.num_processes={args.num_processes}")
    if args.process_id is not None:
        overrides.append(f"distributed.process_id={args.process_id}")
    cfg = load_config(args.config, overrides)  # a UserError (ConfigError) exits 2 in one line (jalign.cli.main)
    if args.print_config:
        print(cfg.to_json(indent=2))
        return 0
    from jalign.train.loop import NonFiniteError, summarize, train

    try:
        result = train(cfg)
    except NonFiniteError as e:
        print(f"jalign train: {e}", file=sys.stderr)
        return 3
    if result.message:
        print(f"jalign train: {result.message}", file=sys.stderr)
    print(json.dumps({"start_step": result.start_step, "final_step": result.final_step, **summarize(result.history)}, indent=2))
    return 0

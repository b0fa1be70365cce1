"""``jalign diagnose --policy DIR [--reference DIR] --data FILE [--beta B] [--out DIR]``: ranking accuracy,
idealised ranking accuracy, misranked pairs, likelihood displacement (and where the lost mass went), CHES,
gradient entanglement and top-k indicators of a policy against a reference on a preference file; and
``jalign diagnose --run WORKDIR``: the headline diagnostics of a jalign training run at each checkpoint
(the computation: :mod:`jalign.train.diagnose`).

Exit status: 0 on success, 2 for bad input (one line on stderr naming the file and, where there is one, the
line): missing models or data, mismatched vocabularies, an empty or invalid data file, a pair longer than the
model's context.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "diagnose",
        help="ranking accuracy, likelihood displacement, CHES and gradient entanglement of a policy/reference pair "
             "on a preference file",
    )
    p.add_argument("--policy", help="Hugging Face-format model directory, or 'small_lm' (required unless --run)")
    p.add_argument("--reference", help="reference model directory or 'small_lm' (default: the policy)")
    p.add_argument("--data", help="preference file (.jsonl/.json/.parquet, any layout jalign reads); required "
                                   "unless --run (which defaults to the run's own data source)")
    p.add_argument("--run", metavar="WORKDIR",
                   help="a jalign training run's workdir: the headline diagnostics at each saved checkpoint, "
                        "plotted over training (--max-pairs defaults to 64 there)")
    p.add_argument("--format", help="override the data-format auto-detection (see `jalign data inspect`)")
    p.add_argument("--beta", type=float, default=0.1,
                   help="β of the idealised ranking accuracy, the DPO loss at the flip and the entanglement losses "
                        "with a reference (default 0.1)")
    p.add_argument("--out", default="diagnose-report", help="output directory (default ./diagnose-report)")
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs of the file")
    p.add_argument("--tokenizer", help="'byte' or a tokenizer.json path (default: the policy directory's "
                                       "tokenizer.json if it has one, else byte)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (default 16)")
    p.add_argument("--entanglement-pairs", type=int, default=16,
                   help="pairs sampled for the gradient-entanglement statistics (default 16; 0 = off)")
    p.add_argument("--entanglement-losses",
                   help="comma-separated pairwise margin losses for the entanglement conditions, or 'all' "
                        "(default: dpo,ipo,simpo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the entanglement sample and of the sampled completions")
    p.add_argument("--sample-prompts", type=int, default=8,
                   help="prompts completed by each model for the top-k indicators (default 8; 0 = off)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="completion length for the top-k indicators "
                                                                   "(default 32)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid records instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from jalign.train.diagnose import DiagnoseError, diagnose, write_outputs

    if args.run is None and (args.policy is None or args.data is None):
        print("jalign diagnose: give --policy and --data (or --run WORKDIR)", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"jalign diagnose: {out}: output directory is not writable ({e.strerror})", file=sys.stderr)
        return 2
    if args.run is not None:
        return _run_mode(args, out)
    try:
        res = diagnose(args.policy, args.data, reference=args.reference, beta=args.beta, max_pairs=args.max_pairs,
                       tokenizer=args.tokenizer, format=args.format, batch_size=args.batch_size,
                       entanglement_pairs=args.entanglement_pairs,
                       entanglement_loss_names=args.entanglement_losses, seed=args.seed, skip_invalid=args.skip_invalid,
                       progress=not args.no_progress, sample_prompts=args.sample_prompts,
                       max_new_tokens=args.max_new_tokens)
    except DiagnoseError as e:
        print(f"jalign diagnose: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(res, out)
    rk, disp = res["ranking"], res["displacement"]
    print(f"{res['n_pairs']} pairs; ranking accuracy policy {rk['policy']['summed']:.3f} "
          f"(length-normalised {rk['policy']['length_normalized']:.3f}), reference {rk['reference']['summed']:.3f}")
    if rk["idealized"] is not None:
        print(f"idealised ranking accuracy {rk['idealized']['value']:.3f} (β={args.beta:g}, "
              f"{rk['idealized']['pairs']} pairs)")
    print(f"reference misranks {res['misranked']['count']} pairs; chosen log-prob fell in {disp['chosen_down']} "
          "pairs")
    for n in res["notes"]:
        print(f"note: {n}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _run_mode(args, out) -> int:
    from jalign.train.diagnose import DiagnoseError, diagnose_run, write_run_outputs

    try:
        res = diagnose_run(args.run, data=args.data, max_pairs=args.max_pairs or 64, tokenizer=args.tokenizer,
                           format=args.format, batch_size=args.batch_size, skip_invalid=args.skip_invalid,
                           progress=not args.no_progress)
    except DiagnoseError as e:
        print(f"jalign diagnose: {e}", file=sys.stderr)
        return 2
    paths = write_run_outputs(res, out)
    for r in res["over_training"]:
        print(f"step {r['step']}: ranking accuracy {r['accuracy']:.3f} (length-normalised "
              f"{r['accuracy_normalized']:.3f}), mean Δ chosen {r['mean_chosen_change']:+.3f}, chosen down in "
              f"{r['frac_chosen_down']:.0%} of pairs")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

"""``jalign data``: inspect / validate local preference files, list and generate built-in data sets, build TFDS.

Exit status: 0 when every record is valid, 1 when any record is invalid (the report names file, line and
field) or no record is left, 2 for usage errors (unknown format, missing or empty file, a limit below 1).
"""

from __future__ import annotations

import argparse
import json
import sys


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or a negative limit is a usage error, never "use the default")."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def register(sub) -> None:
    p = sub.add_parser(
        "data", help="preference data: inspect/validate files, built-in data sets, TFDS builds"
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    ins = dsub.add_parser("inspect", help="counts, length histograms, duplicates, validation report")
    ins.add_argument("path")
    ins.add_argument(
        "--format",
        help="override format auto-detection (hh, ultrafeedback, pairwise/tldr, "
        "unpaired/kto, listwise, scored, oasst)",
    )
    ins.add_argument(
        "--kind",
        choices=["pairwise", "unpaired", "listwise", "scored"],
        help="record kind wanted (oasst trees: listwise or pairwise)",
    )
    ins.add_argument(
        "--max-prompt-chars",
        type=_positive_int,
        default=None,
        help="prompts longer than this are invalid (default 100000)",
    )
    ins.add_argument("--max-response-chars", type=_positive_int, default=None,
                     help="responses longer than this are invalid (default: no limit)")
    ins.add_argument("--seq-len", type=_positive_int, default=None,
                     help="token budget per sequence (data.seq_len): measure truncation as training does")
    ins.add_argument("--max-prompt-len", type=_positive_int, default=None,
                     help="prompt token budget (data.kwargs.max_prompt_len; default 64 as the file_* sources)")
    ins.add_argument("--tokenizer", default="byte", help="'byte' or a Hugging Face tokenizer.json (with --seq-len)")
    ins.add_argument("--json", action="store_true", help="print the full report as JSON")
    ins.set_defaults(func=run_inspect)

    ls = dsub.add_parser("list", help="list built-in data sets with their cards")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    gen = dsub.add_parser("generate", help="write a built-in data set as JSONL (atomically)")
    gen.add_argument("name")
    gen.add_argument("--out", required=True)
    gen.add_argument("--n", type=int, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(func=run_generate)

    bld = dsub.add_parser("build", help="validate a file and build it as a TFDS data set (array_record)")
    bld.add_argument("kind", choices=["pairwise", "unpaired", "listwise", "scored"])
    bld.add_argument("path")
    bld.add_argument("--data-dir", required=True)
    bld.add_argument("--format", default=None)
    bld.add_argument("--file-format", default="array_record", choices=["array_record", "parquet"])
    bld.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid records (reported) instead of failing"
    )
    bld.set_defaults(func=run_build)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fmt_hist(h: dict) -> str:
    bins = ", ".join(f"{k}:{v}" for k, v in h["bins"].items() if v)
    if not h["count"]:
        return "no values"
    return f"n={h['count']} min={h['min']} median={h['median']:g} max={h['max']}  [{bins}]"


def run_inspect(args) -> int:
    from jalign.data.schema import DEFAULT_MAX_PROMPT_CHARS
    from jalign.data.summary import inspect_file

    try:
        tok = None
        if args.seq_len is not None and args.tokenizer != "byte":
            from jalign.tokenizers import HFTokenizer

            tok = HFTokenizer(args.tokenizer)
        s = inspect_file(
            args.path, format=args.format, kind=args.kind,
            max_prompt_chars=DEFAULT_MAX_PROMPT_CHARS if args.max_prompt_chars is None else args.max_prompt_chars,
            max_response_chars=args.max_response_chars, seq_len=args.seq_len,
            max_prompt_len=64 if args.max_prompt_len is None else args.max_prompt_len, tokenizer=tok,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{s['path']}: format={s['format']} kind={s['kind']}")
        print(f"  records: {s['records']} valid, {s['invalid']} invalid ({s['validation']['n_lines']} lines)")
        for k, h in s["lengths"].items():
            print(f"  length[{k}] (chars): {_fmt_hist(h)}")
        d = s["duplicates"]
        print(
            f"  duplicates: {d['records']} records identical to an earlier one; {d['repeated_prompts']} repeated prompts"
        )
        print(f"  identical chosen/rejected (or completions): {s['identical_pairs']['count']}")
        for k in ("desirable", "with_ties", "with_scores", "score_chosen_below_rejected"):
            if k in s:
                print(f"  {k}: {s[k]}")
        for k, v in s["validation"]["notes"].items():
            print(f"  note {k}: {v}")
        errors = s["validation"]["errors"]
        if "truncation" in s:
            print(f"  {s['truncation']['summary']}")
            errors = sorted(errors + s["truncation"]["errors"], key=lambda e: e["line"])
        for e in errors[:50]:
            print(f"  INVALID {e['path']}:{e['line']}: field '{e['field']}': {e['message']}")
        if s["invalid"] > 50:
            print(f"  ... {s['invalid'] - 50} more (use --json)")
    if s["invalid"]:
        print(f"{s['invalid']} invalid record(s) in {s['path']}", file=sys.stderr)
        return 1
    if not s["records"]:
        print(f"{s['path']}: no records (an empty file?)", file=sys.stderr)
        return 1
    return 0


def run_list(args) -> int:
    from jalign.data import builtin

    cards = [builtin.card(n).to_dict() for n in builtin.names()]
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    for c in cards:
        print(f"{c['name']}  [{c['kind']}]  size={c['size']} seed={c['seed']}")
        print(f"    {c['rule']}")
    return 0


def run_generate(args) -> int:
    from jalign.data import builtin
    from jalign.data.io import write_jsonl

    try:
        recs = builtin.load(args.name, n=args.n, seed=args.seed)
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = write_jsonl(recs, args.out)
    print(f"wrote {len(recs)} {builtin.card(args.name).kind} records to {path}")
    return 0


def run_build(args) -> int:
    from jalign.data.schema import InvalidDataError
    from jalign.data.tfds_builders import build

    try:
        b = build(args.kind, args.path, data_dir=args.data_dir, format=args.format,
                  file_format=args.file_format, skip_invalid=args.skip_invalid)  # fmt: skip
    except InvalidDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, r in b.reports.items():
        print(f"{split}: {r['n_records']} records, {r['n_invalid']} invalid skipped -> {b.data_dir}")
    return 0

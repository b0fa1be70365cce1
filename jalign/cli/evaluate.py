"""``jalign eval --policy DIR --baseline DIR --judge rm:PATH|NAME --data PROMPTS [--n N] [--best-of N] [--out DIR]``:
win rate of a policy over a baseline under a judge, mean reward, Monte-Carlo KL(policy‖baseline), completion
lengths and distinct-n (the computation: :mod:`jalign.train.evaluate`).

Exit status: 0 on success, 2 for bad input (one line on stderr naming the file, flag or value).
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("eval", help="win rate of a policy over a baseline under a reward model or a named reward, "
                                    "with mean reward, Monte-Carlo KL, lengths and distinct-n")
    p.add_argument("--policy", required=True, help="Hugging Face-format model directory, or 'small_lm'")
    p.add_argument("--baseline", required=True, help="baseline (and KL reference) model directory, or 'small_lm'")
    p.add_argument("--judge", required=True,
                   help="rm:PATH (a reward-model checkpoint; rm:P1,P2 = the mean of several) or the name of a "
                        "registered reward (e.g. lexicon, count_token)")
    p.add_argument("--judge-kwargs", default="{}", help="JSON object of keyword arguments of a named reward")
    p.add_argument("--data", required=True, help="prompt file: .txt (one prompt a line) or .jsonl/.json records "
                                                  "with a 'prompt' field")
    p.add_argument("--n", type=int, default=4, help="completions per prompt and model (default 4)")
    p.add_argument("--best-of", type=int, default=0, help="also evaluate the best-of-N policy under the judge "
                                                          "(N >= 2; default 0 = off)")
    p.add_argument("--max-prompts", type=int, help="use only the first N prompts of the file")
    p.add_argument("--max-new-tokens", type=int, default=32, help="completion length limit (default 32)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1: unbiased KL)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per sampling / scoring call (default 64)")
    p.add_argument("--tokenizer", help="'byte' or a tokenizer.json path (default: the policy directory's "
                                       "tokenizer.json if it has one, else byte)")
    p.add_argument("--out", default="eval-report", help="output directory (default ./eval-report)")
    p.set_defaults(func=run)


def run(args) -> int:
    from jalign.train.evaluate import EvalError, evaluate, write_outputs

    try:
        kwargs = json.loads(args.judge_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError
    except ValueError:
        raise EvalError(f"--judge-kwargs {args.judge_kwargs!r}: must be a JSON object") from None
    res = evaluate(args.policy, args.baseline, args.judge, args.data, n=args.n, best_of=args.best_of,
                   max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   seed=args.seed, batch_size=args.batch_size, tokenizer=args.tokenizer, judge_kwargs=kwargs)
    paths = write_outputs(res, args.out)
    w, kl = res["win_rate"], res["kl"]
    print(f"win rate {w['win_rate']:.4f} ± {w['se']:.4f} (SE, {w['prompts']} prompts); mean reward policy "
          f"{res['policy']['reward_mean']:.4f}, baseline {res['baseline']['reward_mean']:.4f}; "
          f"KL(policy‖baseline) k1 {kl['k1']:.4f} ± {kl['k1_se']:.4f}")
    if "best_of_n" in res:
        b = res["best_of_n"]
        print(f"best-of-{b['N']}: win rate {b['win_rate']['win_rate']:.4f} ± {b['win_rate']['se']:.4f}, "
              f"mean reward {b['reward_mean']:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0

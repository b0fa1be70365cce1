"""Config of the CoPG bandit experiment (Flet-Berliac et al., EMNLP 2024, Section 5), ml_collections style.

``get_config()`` is the paper setting; ``get_config("quick")`` is the same (the paper setting already runs on
CPU in seconds). ``python -m experiments.copg_bandit [--epochs N] [--seeds S]`` trains every method over the
seeds with one jitted vmap and prints the final regrets; ``jalign reproduce copg-bandit`` runs the full
reproduction (figures, sweeps, claims).

The language-model counterpart (CoPG vs DPO vs IPO on the small LM, responses scored by a scripted lexicon
reward) is experiments/copg_small_lm.py (one CoPG run with ``jalign train``) and
experiments/sweep_copg_dpo_ipo.py (the three methods over a β sweep, with held-out evaluation).
"""

from __future__ import annotations

import ml_collections


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    if preset not in ("paper", "quick"):
        raise ValueError(f"get_config: argument preset={preset!r} must be 'paper' or 'quick'")
    c = ml_collections.ConfigDict()
    c.name = "copg_bandit"
    c.rewards = (2.5, 2.0, 1.0)
    c.mu1 = (0.1, 0.2, 0.7)
    c.mu2 = (0.05, 0.05, 0.9)
    c.ref_probs = (1 / 3, 1 / 3, 1 / 3)
    c.beta = 0.5
    c.ipo_tau = 0.5  # not stated in the paper: τ = β
    c.preference_model = "bradley_terry"
    c.n_pairs = 10_000
    c.batch_size = 512
    c.epochs = 100
    c.lr = 1e-3
    c.seeds = 20
    c.methods = ("copg", "ipo", "pg_zero_baseline", "pg_value_baseline")
    c.seed = 0
    return c


def main(argv=None) -> int:
    import argparse

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int)
    args = p.parse_args(argv)
    c = get_config(args.preset)
    if args.epochs:
        c.epochs = args.epochs
    if args.seeds:
        c.seeds = args.seeds
    bandit = envs.k_armed(jnp.array(c.rewards), jnp.array(c.ref_probs))
    mu1, mu2 = jnp.array(c.mu1), jnp.array(c.mu2)

    def one(key, m):
        return envs.train(key, m, bandit, mu1, mu2, beta=c.beta, ipo_tau=c.ipo_tau, lr=c.lr, n_pairs=c.n_pairs,
                          batch_size=c.batch_size, epochs=c.epochs, model=c.preference_model)

    keys = jax.random.split(jax.random.key(c.seed), c.seeds)
    ids = jnp.array([envs.method_index(m) for m in c.methods])
    out = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))(keys, ids)
    reg = np.asarray(out["regret"])
    print(f"initial regret {reg[0, 0, 0]:.4f}; after {c.epochs} epochs (mean ± sd over {c.seeds} seeds):")
    for i, m in enumerate(c.methods):
        print(f"  {m:22s} {reg[i, :, -1].mean():.4f} ± {reg[i, :, -1].std():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

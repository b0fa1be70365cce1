"""Seeds batched on a leading axis: the vmapped (over seeds) update and training loop of the entanglement trainer
equal the per-seed ones (the invariance that lets the reproductions run all seeds in one compiled step)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from _train_helpers import small_cfg

from jalign.studies.entanglement import PairwiseWeightedTrainer, train_pairwise, train_pairwise_seeds
from jalign.train import plugins
from jalign.train.batch import PAIRWISE_FIELDS
from jalign.train.objectives import make_objective
from jalign.train.plugins.tiny import tiny_lm
from jalign.train.probes import entanglement_probe
from jalign.train.step import (
    TrainState,
    make_train_step,
    replicate_tree,
    split_model,
    stack_trees,
    tree_index,
)

SEEDS = 3


def _batches(cfg, seed, n, k=2):
    src = plugins.make_data(cfg.data.name, batch_size=n, seq_len=cfg.data.seq_len, seed=seed,
                             **dict(cfg.data.kwargs))
    return [{f: np.asarray(v) for f, v in next(src).items()} for _ in range(k)]


@pytest.fixture(scope="module")
def setup():
    cfg = small_cfg()
    graphdef, params, rest = split_model(tiny_lm(1, d_model=8, d_hidden=16))
    tr = PairwiseWeightedTrainer(graphdef, rest, optax.adam(0.05))
    per_seed = [_batches(cfg, 10 + s, 3) for s in range(SEEDS)]  # seed s: its own two batches of 3 pairs
    probe_batch = _batches(cfg, 99, 4, k=1)[0]
    return tr, params, per_seed, probe_batch


def _close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6, err_msg=what)


def test_stack_replicate_and_index_are_inverse(setup):
    _, params, _, _ = setup
    twisted = [jax.tree.map(lambda x, s=s: x + s, params) for s in range(SEEDS)]
    stacked = stack_trees(twisted)
    assert jax.tree.leaves(stacked)[0].shape[0] == SEEDS
    for s in range(SEEDS):
        _close(tree_index(stacked, s), twisted[s], f"slice {s}")
    _close(tree_index(replicate_tree(params, SEEDS), 2), params, "replicate")


# ("dpo", "none") is covered by test_batched_training_with_probe_equals_per_seed_training
@pytest.mark.parametrize("loss,mitigation", [("dpo", "normalized"), ("simpo", "masked")])
def test_vmapped_update_equals_the_per_seed_update(setup, loss, mitigation):
    """Two Adam updates of S seeds, each on its own batches, in one vmapped call per update: every seed's
    parameters, optimiser state and loss equal those of the per-seed update (float tolerance)."""
    tr, params, per_seed, _ = setup
    hp = {"beta": 0.1} if loss == "dpo" else {"beta": 2.0, "gamma": 0.5}
    sp = replicate_tree(params, SEEDS)
    so = jax.vmap(tr.tx.init)(sp)
    ref = []
    for s in range(SEEDS):
        p, o, losses = params, tr.tx.init(params), []
        for b in per_seed[s]:
            p, o, info = tr.update(p, o, b, loss=loss, hparams=hp, mitigation=mitigation, ref_params=params)
            losses.append(info["loss"])
        ref.append((p, o, losses))
    seed_losses = []
    for k in range(2):
        batch = {f: np.stack([per_seed[s][k][f] for s in range(SEEDS)]) for f in PAIRWISE_FIELDS}
        sp, so, info = tr.update_seeds(sp, so, batch, loss=loss, hparams=hp, mitigation=mitigation,
                                       ref_params=params)
        seed_losses.append(info["loss"])
    for s in range(SEEDS):
        _close(tree_index(sp, s), ref[s][0], f"params of seed {s}")
        _close(tree_index(so, s), ref[s][1], f"optimiser state of seed {s}")
        np.testing.assert_allclose([row[s] for row in seed_losses], ref[s][2], rtol=1e-5)
    # the seeds saw different data, so they differ: the batching did not mix or duplicate them
    assert not np.allclose(np.asarray(jax.tree.leaves(tree_index(sp, 0))[0]),
                           np.asarray(jax.tree.leaves(tree_index(sp, 1))[0]))


def test_batched_training_with_probe_equals_per_seed_training(setup):
    """train_pairwise_seeds (probe statistics vmapped over seeds) equals train_pairwise run seed by seed."""
    tr, params, per_seed, pb = setup
    hp = {"beta": 0.1}
    mk = lambda: entanglement_probe(pb, loss="dpo", hparams=hp, every=2, model=tr.lm, batch_size=2)
    out = train_pairwise_seeds(tr, params, [iter(b) for b in per_seed], loss="dpo", hparams=hp, steps=2,
                               probe=mk())
    for s in range(SEEDS):
        one = train_pairwise(tr, params, iter(per_seed[s]), loss="dpo", hparams=hp, steps=2, probes=[mk()])
        assert [r["step"] for r in out["probes"][s]] == [r["step"] for r in one["probes"]] == [0, 2]
        for a, b in zip(out["probes"][s], one["probes"], strict=True):
            for key in ("cosine", "inner", "chosen_sq_norm", "mean_chosen_logps", "mean_rejected_logps",
                        "case/ideal"):
                np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-6, err_msg=f"seed {s} {key}")
        np.testing.assert_allclose([h["loss"][s] for h in out["history"]], [h["loss"] for h in one["history"]],
                                   rtol=1e-5)
        _close(tree_index(out["params"], s), one["params"], f"final params of seed {s}")


def test_vmapped_trainer_step_equals_the_per_seed_step(setup):
    """The trainer's pure DPO step (make_train_step), vmapped over stacked states and batches (as the ches
    reproduction runs its seeds): every seed's state and loss equal the per-seed step's."""
    tr, params, per_seed, _ = setup
    graphdef = tr.lm.graphdef
    step = make_train_step(graphdef, make_objective("preference", "dpo", {"beta": 0.1}), tr.tx)
    jstep, vstep = jax.jit(step), jax.jit(jax.vmap(step))

    def state(s):
        return TrainState(params=params, opt_state=tr.tx.init(params), model_state=tr.lm.model_state,
                          ref_params=params, step=jax.numpy.zeros((), jax.numpy.int32),
                          rng=jax.random.key_data(jax.random.key(s)))

    fields = list(PAIRWISE_FIELDS)
    one = [state(s) for s in range(SEEDS)]
    many = stack_trees(one)
    for k in range(2):
        batches = [{f: per_seed[s][k][f] for f in fields} for s in range(SEEDS)]
        outs = [jstep(one[s], batches[s]) for s in range(SEEDS)]
        one = [o[0] for o in outs]
        many, m = vstep(many, {f: np.stack([b[f] for b in batches]) for f in fields})
        np.testing.assert_allclose(np.asarray(m["loss"]), [float(o[1]["loss"]) for o in outs], rtol=1e-5)
    for s in range(SEEDS):
        _close(tree_index(many.params, s), one[s].params, f"params of seed {s}")
        _close(tree_index(many.opt_state, s), one[s].opt_state, f"optimiser state of seed {s}")

"""The in-memory batch source (the data interface): resume, per-process rows, bad input; mesh helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jalign.tokenizers import ByteTokenizer
from jalign.train.plugins import tiny
from jalign.train.sharding import annotated_spec, leaf_spec, make_mesh


def _src(**kw):
    return tiny.InMemoryBatchSource(tiny.synthetic_pairwise_examples(20, 24), 4, seed=3, **kw)


def test_state_roundtrip_resumes_exactly_across_epochs():
    a = _src()
    seen = [next(a) for _ in range(7)]  # 5 batches per epoch: crosses into epoch 1
    state = json.loads(json.dumps(a.get_state()))
    assert state == {"epoch": 1, "position": 8}
    rest = [next(a) for _ in range(6)]
    b = _src()
    b.set_state(state)
    for x, y in zip(rest, [next(b) for _ in range(6)], strict=True):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    epoch0 = np.concatenate([s["chosen_ids"] for s in seen[:5]])
    assert len({r.tobytes() for r in epoch0}) == len({r.tobytes() for r in np.stack(
        [e["chosen_ids"] for e in tiny.synthetic_pairwise_examples(20, 24)])})  # a permutation of all


def test_process_rows_partition_the_global_batch():
    full = next(_src())
    parts = [next(_src(process_index=i, process_count=2)) for i in range(2)]
    for k in full:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), full[k])


def test_bad_input_is_named():
    ex = tiny.synthetic_pairwise_examples(8, 24)
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        tiny.InMemoryBatchSource(ex, 4, process_count=3)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        tiny.InMemoryBatchSource(ex, 9)
    bad = [dict(e) for e in ex]
    del bad[5]["rejected_mask"]
    with pytest.raises(ValueError, match="example 5 has fields"):
        tiny.InMemoryBatchSource(bad, 4)
    with pytest.raises(ValueError, match="exceed seq_len=8"):
        tiny.synthetic_pairwise_examples(2, 8)
    with pytest.raises(ValueError, match="keys epoch, position"):
        _src().set_state({"epoch": 0})


def test_synthetic_pairs_follow_the_bos_eos_policy():
    tok = ByteTokenizer()
    ex = tiny.synthetic_pairwise_examples(4, 24)[0]
    for s in ("chosen", "rejected"):
        ids, mask, attn = ex[f"{s}_ids"], ex[f"{s}_mask"], ex[f"{s}_attention_mask"]
        n = int(attn.sum())
        assert ids[0] == tok.bos_id and ids[n - 1] == tok.eos_id and (ids[n:] == tok.pad_id).all()
        assert (ids[:n] == tok.bos_id).sum() == 1 and (ids[:n] == tok.eos_id).sum() == 1
        assert mask[n - 1] == 1 and mask[0] == 0 and (mask[n:] == 0).all()
    assert tok.decode(ex["chosen_ids"][ex["chosen_mask"] == 1]).strip(" .") in tiny._POS


def test_mesh_shapes_and_default_rule(mesh8):
    m = make_mesh(2, 2, 2)
    assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert tuple(leaf_spec((258, 16), m)) == ("fsdp", "tensor")
    assert tuple(leaf_spec((259, 16), m)) == (None, "tensor")  # 259 not divisible by fsdp=2
    assert tuple(leaf_spec((32,), m)) == ("fsdp",)  # vectors: no tensor split
    assert tuple(leaf_spec((3, 5), m)) == (None, None)
    assert tuple(leaf_spec((), m)) == ()
    assert dict(make_mesh(-1, 4, 1).shape)["data"] == 2
    with pytest.raises(ValueError, match=r"not divisible by mesh.fsdp\*mesh.tensor=3"):
        make_mesh(-1, 3, 1)
    with pytest.raises(ValueError, match="!= 8 devices"):
        make_mesh(4, 4, 1)


def test_annotated_parameters_follow_logical_rules_and_moments_follow_parameters(mesh8):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jalign.train.config import base_config
    from jalign.train.step import init_state, make_optimizer, state_shardings

    class Annotated(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros((258, 16)), out_sharding=("vocab", "embed"), eager_sharding=False)
            self.v = nnx.Param(jnp.zeros((6, 16)), out_sharding=("vocab", "tensor"), eager_sharding=False)
            self.b = nnx.Param(jnp.zeros((16,)))

    tx, _ = make_optimizer(base_config().optim, 10)
    _, st = init_state(Annotated(), tx, reference=True)
    m = make_mesh(2, 2, 2)
    sh = state_shardings(st, m, rules={"vocab": "fsdp", "embed": "tensor"})
    P = jax.sharding.PartitionSpec
    assert sh.params["w"].get_value().spec == P("fsdp", "tensor")
    assert sh.ref_params["w"].get_value().spec == P("fsdp", "tensor")
    assert sh.params["v"].get_value().spec == P("fsdp", "tensor")  # 6 % 2 == 0
    assert sh.params["b"].get_value().spec == P("fsdp")  # unannotated: the shape rule
    adam = sh.opt_state[1][0]
    assert adam.mu["w"].get_value().spec == P("fsdp", "tensor") and adam.nu["w"].get_value().spec == P("fsdp", "tensor")
    sh_none = state_shardings(st, m)  # no rules: logical names unknown -> replicated
    assert sh_none.params["w"].get_value().spec == P(None, None)


def test_annotated_spec_replicates_what_cannot_be_split(mesh8):
    m = make_mesh(2, 2, 2)
    assert tuple(annotated_spec(("vocab", "vocab"), (4, 4), m, {"vocab": "fsdp"})) == ("fsdp", None)  # axis once
    assert tuple(annotated_spec(("fsdp", None), (3, 4), m, None)) == (None, None)  # 3 not divisible
    assert tuple(annotated_spec(("heads",), (4, 8), m, {})) == (None, None)


def test_check_batch_names_field_and_row():
    from jalign.train.objectives import check_batch, make_objective

    pair = make_objective("preference", "dpo")
    good = next(_src())
    check_batch(pair, good)
    with pytest.raises(ValueError, match=r"missing field\(s\) \['rejected_mask'\]"):
        check_batch(pair, {k: v for k, v in good.items() if k != "rejected_mask"})
    b = {k: v.copy() for k, v in good.items()}
    b["chosen_mask"][2] = 0
    with pytest.raises(ValueError, match="chosen_mask has an empty response at row 2"):
        check_batch(pair, b)
    b = {k: v.copy() for k, v in good.items()}
    b["rejected_mask"][1, -1] = 1  # a padded position
    with pytest.raises(ValueError, match="rejected_mask marks response tokens outside rejected_attention_mask at row 1"):
        check_batch(pair, b)
    b = dict(good, rejected_ids=good["rejected_ids"][:3])
    with pytest.raises(ValueError, match="'rejected_ids' has 3 rows but 'chosen_ids' has 4"):
        check_batch(pair, b)
    b = dict(good, chosen_ids=good["chosen_ids"].astype(np.float32))
    with pytest.raises(ValueError, match="integer token ids"):
        check_batch(pair, b)
    b = dict(good, ref_chosen_logps=np.array([0.0, np.nan, 0.0, 0.0], np.float32),
             ref_rejected_logps=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="'ref_chosen_logps' is not finite at row 1"):
        check_batch(pair, b)


def test_check_batch_listwise_rows_and_samples():
    from jalign.train.objectives import Listwise, check_batch

    class _L(Listwise):
        def __init__(self):  # no registered listwise loss yet: only the field checks are exercised
            pass

    ex = tiny.synthetic_sft_examples(6, 24)
    b = {f: np.stack([e[f] for e in ex]).reshape(2, 3, -1) for f in ("ids", "mask", "attention_mask")}
    b["scores"] = np.zeros((2, 3), np.float32)
    b["scores"][1, 2] = np.inf
    with pytest.raises(ValueError, match="'scores' is not finite at row 1"):
        check_batch(_L(), b)
    b["scores"][1, 2] = 0
    b["mask"][1, 1] = 0
    with pytest.raises(ValueError, match="empty response at row 1, sample 1"):
        check_batch(_L(), b)
    check_batch(_L(), dict(b, list_mask=np.array([[1, 1, 1], [1, 0, 1]])))  # masked-out entry may be empty

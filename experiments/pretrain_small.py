"""The small byte-level GPT-2-style LM shipped in jalign/assets/small_lm (``jalign pretrain``)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        arch="gpt2", vocab_size=259, d_model=128, n_layers=4, n_heads=4, max_seq_len=256,
        bos_id=257, eos_id=258, pad_id=256,
    ))
    c.data = ml_collections.ConfigDict(dict(sources=("pydoc_topics",), n_template=0, val_fraction=0.05))
    c.train = ml_collections.ConfigDict(dict(
        steps=1000, batch_size=16, seq_len=128, lr=3e-3, warmup=50, final_lr_frac=0.1, weight_decay=0.1,
        clip=1.0, seed=0, eval_every=100, eval_batches=8,
    ))
    return c

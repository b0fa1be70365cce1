"""Training configuration: one convention — ml_collections ``get_config()`` modules.

An experiment file ``experiments/NAME.py`` defines ``get_config()`` that starts from :func:`base_config`
(every valid key, locked) and changes values. Because the base is locked, a typo — in the file or in a
command-line override ``key=value`` — fails fast with :class:`ConfigError`, naming the key, close matches
and every valid key. Free-form sections (``model.kwargs``, ``data.kwargs``, ``loss.hparams``) are unlocked;
their keys are checked by the component that receives them (the model factory's signature, the loss
registry's hyperparameter list).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from jalign import losses
from jalign.errors import UserError
from jalign.train.objectives import MITIGATIONS, check_mitigation
from jalign.train.pairwise import PAIR_ALGORITHMS, PairOptions
from jalign.train.pairwise import check_options as check_pair_options
from jalign.train.rl import PGOptions, check_options

MODES = ("sft", "preference", "online", "reward")
REFERENCE_MODES = ("frozen", "cached", "none")
SCHEDULES = ("cosine", "constant", "linear")
OPTIMIZERS = ("adamw", "adam", "sgd")
_FREE = ("model.kwargs", "data.kwargs", "loss.hparams", "online.reward_kwargs", "mesh.rules", "eval.data_kwargs")


class ConfigError(UserError):
    """An invalid configuration key or value (a :class:`~jalign.errors.UserError`: the CLI prints it in one
    line and exits 2)."""


def base_config() -> ml_collections.ConfigDict:
    """Every configuration key with its default (locked; free-form sections unlocked)."""
    c = ml_collections.ConfigDict()
    c.mode = "preference"  # sft | preference | online | reward (a reward model on pairwise data)
    c.seed = 0
    c.workdir = ""  # output directory: metrics.jsonl, tensorboard/, checkpoints/ ("" = no output)

    c.model = ml_collections.ConfigDict()
    c.model.name = "tiny"  # a registered model (jalign.train.plugins)
    c.model.kwargs = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic_pairwise"  # a registered data source (jalign.train.plugins)
    c.data.batch_size = 8  # global batch size (examples; pairs for pairwise; prompts for online)
    c.data.seq_len = 32
    c.data.kwargs = ml_collections.ConfigDict()

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "dpo"  # a registered loss (jalign.losses.names()) or "logic:<name>[:<f>]"; ignored for sft, reward
    c.loss.hparams = ml_collections.ConfigDict()
    c.loss.reference = "frozen"  # frozen (copy of the initial model, in the step) | cached | none
    c.loss.mitigation = "none"  # none | masked: margin on the contrasting span only (pairwise; docs/diagnostics.md)

    c.reward_model = ml_collections.ConfigDict()  # mode="reward": jalign.losses.reward_model_loss
    c.reward_model.margin = 0.0  # −log σ(r_c − r_r − margin); a batch field "margin" [B] replaces it per pair
    c.reward_model.center_coef = 0.0  # + center_coef·(r_c + r_r)² (TRL's center_rewards_coefficient), >= 0

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.schedule = "cosine"  # warmup then cosine | constant | linear decay
    c.optim.warmup_steps = 0
    c.optim.end_lr_fraction = 0.0  # final lr = lr * end_lr_fraction (cosine / linear)
    c.optim.weight_decay = 0.0
    c.optim.decay_matrices_only = False  # weight decay only on parameters with >= 2 dimensions (not biases, norms)
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.grad_clip = 1.0  # global-norm clipping threshold; 0 disables
    c.optim.accum_steps = 1  # gradient accumulation: microbatches per step

    c.train = ml_collections.ConfigDict()
    c.train.steps = 100
    c.train.log_every = 1
    c.train.progress = True  # tqdm progress bar with ETA
    c.train.tensorboard = True
    c.train.export = ""  # directory: the final policy in the Hugging Face layout (jalign.models models only)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all remaining devices
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.rules = ml_collections.ConfigDict()  # logical axis name -> mesh axis, for annotated parameters

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.enabled = True  # write checkpoints to workdir/checkpoints (needs workdir)
    c.checkpoint.every = 0  # save every N steps (0: only at the end); > 0 needs a workdir (else ConfigError)
    c.checkpoint.keep = 3  # keep the N most recent checkpoints
    c.checkpoint.async_save = True
    c.checkpoint.resume = True  # resume from the latest complete checkpoint in workdir
    c.checkpoint.fresh = False  # start a new run in a used workdir: the old run is moved to workdir/archive/<run id>/

    c.online = ml_collections.ConfigDict()
    c.online.num_samples = 2  # K completions per prompt
    c.online.max_new_tokens = 8
    c.online.temperature = 1.0
    c.online.reward = "count_token"  # a registered reward (jalign.train.plugins)
    c.online.reward_kwargs = ml_collections.ConfigDict()
    # Clipped policy gradient (jalign.train.rl; docs/rl.md): "" = train on loss.name (a scored/sampled loss);
    # grpo | rloo | reinforce++ | reinforce++_baseline | ppo = jalign.losses.policy_clip on the algorithm's advantages
    c.online.algorithm = ""
    c.online.num_iterations = 1  # updates on each sampling round's samples (old log-probs fixed at sampling)
    c.online.num_minibatches = 1  # updates per iteration, each on N/M consecutive samples
    c.online.eps_low = 0.2  # clip range: w clipped to [1 - eps_low, 1 + eps_high]; eps_high > eps_low = clip-higher
    c.online.eps_high = 0.2
    c.online.aggregation = "grpo"  # grpo | bnpo | dr_grpo | dapo (TRL's loss_type)
    c.online.importance_level = "token"  # token | sequence (GSPO)
    c.online.scale_rewards = "group"  # grpo advantages: group | batch | none (Dr. GRPO)
    c.online.kl_coef = 0.0  # beta of the KL term against the frozen reference (0: no reference)
    c.online.kl_penalty = "auto"  # loss (k3 per token in the loss) | reward (-kl_coef*KL in the reward) | auto
    c.online.kl_estimator = "k1"  # the per-token estimator of the KL penalty in the reward: k1 | k2 | k3
    c.online.reward_clip = 0.0  # > 0: rewards clipped to [-reward_clip, reward_clip] before the advantages
    # ppo (online.algorithm="ppo"): a critic (a copy of the policy with a value head), GAE, clipped value loss
    c.online.gamma = 1.0
    c.online.lam = 0.95
    c.online.vf_coef = 0.1  # loss = policy loss + vf_coef * value loss
    c.online.cliprange_value = 0.2  # value clipping around the sampling-time values
    c.online.whiten_advantages = True  # ppo: GAE advantages whitened over the completion tokens of the batch
    # Online pairwise (jalign.train.pairwise; docs/rl.md): online.algorithm="pairwise" trains loss.name (a pairwise
    # loss: ipo, dpo, hinge, slic, ...) on two labelled completions per prompt; "nash_md" = Nash-MD-PG, β = kl_coef
    c.online.mixture_beta = 0.0  # weight of the reference in the token-level geometric mixture (IPO-MD, Nash-MD)
    c.online.preference = "bradley_terry"  # bradley_terry: label ~ σ((r1 - r2)/t) | judge: r1 > r2, ties by a coin
    c.online.preference_temperature = 1.0  # t of the Bradley-Terry preference model

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0  # held-out next-token loss every N steps (0: off); needs a source with eval_batches()
    c.eval.batches = 8  # held-out batches per evaluation
    # mode="reward": held-out pairs come from the same data source with data.kwargs updated by these (e.g.
    # path=heldout.jsonl, or data_seed=1 for a built-in set); required when eval.every > 0 in that mode
    c.eval.data_kwargs = ml_collections.ConfigDict()

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator = ""  # host:port; "" = from environment (JALIGN_COORDINATOR) or single process
    c.distributed.num_processes = 0
    c.distributed.process_id = -1

    c.debug = ml_collections.ConfigDict()
    c.debug.exit_after_step = -1  # os._exit(17) right after this step's checkpoint is requested (tests)

    c.lock()
    for path in _FREE:
        _node(c, path).unlock()
    return c


def _node(c, dotted: str):
    for part in dotted.split("."):
        c = c[part]
    return c


def flat_keys(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf key (free-form sections listed as ``section.*``)."""
    out = []
    for k in c.keys():
        name = f"{prefix}{k}"
        v = c[k]
        if name in _FREE:
            out.append(f"{name}.*")
        elif isinstance(v, ml_collections.ConfigDict):
            out.extend(flat_keys(v, name + "."))
        else:
            out.append(name)
    return out


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if "." not in key:  # a bare attribute name (typo inside get_config): compare with the last components
        leaves = {v.rsplit(".", 1)[-1]: v for v in valid}
        close = [leaves[m] for m in difflib.get_close_matches(key, list(leaves), n=3, cutoff=0.5)] + close
    close = list(dict.fromkeys(close))[:3]  # no repeats, best first
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r} ({where}).{hint} Valid keys: {', '.join(valid)}")


def parse_value(text: str):
    """A command-line value: a Python literal (``1e-3``, ``True``, ``[2, 4]``) or else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(c: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply ``key=value`` overrides in place; an unknown key or a wrongly typed value raises ConfigError."""
    valid = flat_keys(base_config())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        free = any(key.startswith(f + ".") for f in _FREE)
        if key not in valid and not free:
            raise _unknown(key, valid, f"override {item!r}")
        parent, _, leaf = key.rpartition(".")
        node = _node(c, parent) if parent else c
        value = parse_value(text)
        try:
            if not free and isinstance(node[leaf], float) and isinstance(value, int):
                value = float(value)
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"override {item!r}: {e}") from None
    return c


def shipped_configs() -> dict[str, Path]:
    """The experiment configs that ship with jalign (package ``jalign.experiments``): name -> file."""
    import importlib.resources

    try:
        root = importlib.resources.files("jalign.experiments")
    except ModuleNotFoundError:  # a source tree without the experiments package
        return {}
    return {p.name[:-3]: Path(str(p)) for p in root.iterdir()
            if p.name.endswith(".py") and not p.name.startswith("_")}


def resolve_config_path(path: str | Path) -> Path:
    """A config file: ``path`` itself if it exists, else the shipped config of that name (``dpo_tiny``,
    ``dpo_tiny.py`` or ``experiments/dpo_tiny.py`` from any directory); ``ConfigError`` listing them otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    name = p.name[:-3] if p.name.endswith(".py") else p.name
    if p.parent in (Path("."), Path("experiments")) and name in shipped:
        return shipped[name]
    raise ConfigError(f"config file {str(path)!r} does not exist; shipped configs (by name): "
                      f"{', '.join(sorted(shipped)) or 'none'}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Import ``path`` (a module with ``get_config()``, or the name of a shipped config: :func:`resolve_config_path`),
    apply ``overrides`` and validate the result."""
    path = resolve_config_path(path)
    spec = importlib.util.spec_from_file_location(f"_jalign_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"config file {str(path)!r} defines no get_config()")
        c = module.get_config()
    except (AttributeError, KeyError) as e:
        if "cannot be added since the config is locked" not in str(e):
            raise
        key = str(e).split('"')[1] if '"' in str(e) else str(e)
        raise _unknown(key, flat_keys(base_config()), f"in {path.name}") from None
    finally:
        sys.modules.pop(spec.name, None)
    apply_overrides(c, overrides)
    validate(c)
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Value checks that the type system of ConfigDict does not do; raises ConfigError naming the key."""
    missing = sorted(set(flat_keys(base_config())) - set(flat_keys(c)))
    if missing:
        raise ConfigError(f"config is missing keys {missing}; start from jalign.train.config.base_config()")

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"config {key}={_node(c, key)!r} must be {what}")

    need(c.mode in MODES, "mode", f"one of {MODES}")
    need(c.loss.reference in REFERENCE_MODES, "loss.reference", f"one of {REFERENCE_MODES}")
    need(c.loss.mitigation in MITIGATIONS, "loss.mitigation", f"one of {MITIGATIONS}")
    need(c.optim.name in OPTIMIZERS, "optim.name", f"one of {OPTIMIZERS}")
    need(c.optim.schedule in SCHEDULES, "optim.schedule", f"one of {SCHEDULES}")
    need(c.optim.lr > 0, "optim.lr", "> 0")
    need(c.optim.warmup_steps >= 0, "optim.warmup_steps", ">= 0")
    need(0 <= c.optim.end_lr_fraction <= 1, "optim.end_lr_fraction", "in [0, 1]")
    need(c.optim.grad_clip >= 0, "optim.grad_clip", ">= 0 (0 disables)")
    need(c.optim.accum_steps >= 1, "optim.accum_steps", ">= 1")
    need(c.data.batch_size >= 1, "data.batch_size", ">= 1")
    need(c.data.batch_size % c.optim.accum_steps == 0, "data.batch_size",
         f"divisible by optim.accum_steps={c.optim.accum_steps}")
    need(c.data.seq_len >= 2, "data.seq_len", ">= 2")
    need(c.train.steps >= 1, "train.steps", ">= 1")
    need(c.train.log_every >= 1, "train.log_every", ">= 1")
    need(c.checkpoint.every >= 0, "checkpoint.every", ">= 0")
    need(c.checkpoint.keep >= 1, "checkpoint.keep", ">= 1")
    if c.checkpoint.every and c.checkpoint.enabled and not c.workdir:
        raise ConfigError(f"config checkpoint.every={c.checkpoint.every} needs a workdir (checkpoints go to "
                          "workdir/checkpoints); set workdir=DIR, or checkpoint.every=0")
    need(c.online.num_samples >= 1, "online.num_samples", ">= 1")
    need(c.online.max_new_tokens >= 1, "online.max_new_tokens", ">= 1")
    need(c.online.temperature > 0, "online.temperature", "> 0")
    need(c.eval.every >= 0, "eval.every", ">= 0 (0 disables)")
    need(c.eval.batches >= 1, "eval.batches", ">= 1")
    for ax in ("data", "fsdp", "tensor"):
        v = c.mesh[ax]
        need(v >= 1 or (ax == "data" and v == -1), f"mesh.{ax}", ">= 1 (mesh.data may be -1)")
    if c.mode == "sft":
        need(c.loss.mitigation == "none", "loss.mitigation", "'none' in mode='sft'")
        return
    if c.mode == "reward":
        need(c.loss.mitigation == "none", "loss.mitigation", "'none' in mode='reward'")
        for key in ("reward_model.margin", "reward_model.center_coef"):
            v = _node(c, key)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), key, "a finite number")
        need(c.reward_model.center_coef >= 0, "reward_model.center_coef", ">= 0")
        if c.eval.every and not c.eval.data_kwargs.keys():
            raise ConfigError(f"config eval.every={c.eval.every} in mode='reward' needs held-out pairs: set "
                              "eval.data_kwargs (data.kwargs for the held-out source, e.g. eval.data_kwargs.path="
                              "heldout.jsonl or eval.data_kwargs.data_seed=1), or eval.every=0")
        return
    if c.online.algorithm not in PAIR_ALGORITHMS and c.online.mixture_beta != 0:
        raise ConfigError(f"config online.mixture_beta={c.online.mixture_beta!r} is only used with online.algorithm "
                          f"in {PAIR_ALGORITHMS} (mode='online'); set it to 0")
    if c.mode == "online" and c.online.algorithm in PAIR_ALGORITHMS:  # online pairwise: jalign.train.pairwise
        try:
            check_pair_options(PairOptions.from_config(c.online), loss_name=c.loss.name,
                               loss_hparams=dict(c.loss.hparams), reference=c.loss.reference,
                               mitigation=c.loss.mitigation)
        except UserError as e:
            raise ConfigError(str(e)) from None
        return
    if c.mode == "online" and c.online.algorithm:  # the clipped policy gradient: loss.name is not used
        need(c.loss.mitigation == "none", "loss.mitigation", f"'none' with online.algorithm={c.online.algorithm!r}")
        if c.loss.hparams.keys():
            raise ConfigError(f"config loss.hparams {sorted(c.loss.hparams.keys())} are not used with online.algorithm="
                              f"{c.online.algorithm!r} (its options are online.*: docs/rl.md); remove them")
        try:
            check_options(PGOptions.from_config(c.online), batch_size=c.data.batch_size,
                          reference=c.loss.reference, accum_steps=c.optim.accum_steps)
        except UserError as e:
            raise ConfigError(str(e)) from None
        return
    try:
        bound = losses.bind(c.loss.name)  # a registered loss or "logic:<name>[:<f>]" (jalign.logic)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"config loss.name: {e.args[0]}") from None
    s = bound.spec
    want = {"preference": ("pairwise", "unpaired", "listwise", "scored"), "online": ("scored", "sampled")}[c.mode]
    if s.kind not in want:
        raise ConfigError(f"config loss.name={c.loss.name!r} is a {s.kind} loss; mode={c.mode!r} needs {want}")
    bad = sorted(set(c.loss.hparams.keys()) - set(s.hparams))
    if bad:
        raise ConfigError(f"config loss.hparams {bad} unknown for loss {s.name!r}; valid: {sorted(s.hparams)}")
    try:
        losses.bind(bound, **dict(c.loss.hparams))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config loss.hparams: {e.args[0]}") from None
    if s.batch_coupled and c.optim.accum_steps > 1:
        raise ConfigError(f"loss {s.name!r} couples the examples of a batch; optim.accum_steps must be 1")
    try:
        check_mitigation(c.loss.mitigation, s.kind, reference=c.loss.reference)
    except ValueError as e:
        raise ConfigError(f"config {e.args[0]}") from None
    if c.loss.reference == "none" and s.needs_reference:
        raise ConfigError(f"loss {s.name!r} needs a reference model; loss.reference='none' is invalid")

"""Built-in data sets, generated offline and deterministically from templates and a seed.

``load(name, n=None, seed=0, **options) -> list[dict]`` returns canonical records (kind in the card, plus a
``meta`` dict); ``card(name)`` returns the dataset card (generation rule, default size, seed, kind);
``names()`` lists them. The same ``(name, n, seed, options)`` gives the same records on every machine
(``random.Random(seed)``, fixed word lists, no clock, no hashing of sets).

Data sets (details in docs/data.md):

* ``sentiment_pairs`` — pairwise; reviews from a grammar, scored by :func:`lexicon_reward` (a small
  valence lexicon written for jalign, with negation and intensifiers); chosen = best, rejected = worst of 4.
* ``persona_yesno`` — pairwise; "Is the following statement something you would say?" with one-word answers
  (" Yes", " No", " Never", " Sure"), for likelihood-displacement experiments (pairs No ≻ Never on statements
  the persona rejects, Yes ≻ No and Sure ≻ Yes on statements it endorses).
* ``word_constraint`` — scored; prompts with a target word, completions from a grammar, reward 1.0 iff the
  target word appears (:func:`contains_word`), half of them satisfy it — for f-DPG-style constraints.
* ``entangle_one_token``, ``entangle_short_suffix``, ``entangle_long_suffix`` — pairwise sentiment pairs
  whose chosen and rejected responses differ in exactly one word (a whitespace-delimited token; under the
  byte tokenizer the differing bytes lie inside that word), with no / a short (3-6 words) / a long
  (>= 30 words) shared suffix after it — the gradient-entanglement variants.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Callable
from typing import Any

# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Card:
    name: str
    kind: str
    size: int
    seed: int
    rule: str
    fields: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, tuple[Card, Callable[..., list[dict]]]] = {}


def _register(card: Card):
    def deco(fn):
        _REGISTRY[card.name] = (card, fn)
        return fn

    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def card(name: str) -> Card:
    if name not in _REGISTRY:
        raise KeyError(f"unknown built-in data set {name!r}; valid: {names()}")
    return _REGISTRY[name][0]


def load(name: str, *, n: int | None = None, seed: int | None = None, **options: Any) -> list[dict]:
    """Generate the built-in data set ``name`` (``n`` records, default the card's size; ``seed`` likewise)."""
    c = card(name)
    n = c.size if n is None else n
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return _REGISTRY[name][1](n=n, seed=c.seed if seed is None else seed, **options)


# ----------------------------------------------------------------------------------------------------------
# A small valence lexicon (written for jalign) and the scripted reward
# ----------------------------------------------------------------------------------------------------------

POSITIVE = {
    "good": 1.9, "great": 3.1, "excellent": 3.2, "wonderful": 3.1, "lovely": 2.8, "pleasant": 2.3,
    "delightful": 2.9, "superb": 3.0, "fine": 0.8, "nice": 1.8, "tasty": 2.0, "fresh": 1.3, "friendly": 2.2,
    "charming": 2.4, "perfect": 2.7, "amazing": 2.8, "enjoyable": 2.2, "brilliant": 2.8, "solid": 1.2,
    "warm": 1.1,
}  # fmt: skip
NEGATIVE = {
    "bad": -2.5, "awful": -3.1, "terrible": -3.2, "horrible": -3.0, "poor": -2.1, "bland": -1.5,
    "dull": -1.7, "stale": -1.8, "rude": -2.2, "boring": -1.9, "disappointing": -2.2, "mediocre": -1.1,
    "cold": -0.9, "dirty": -1.9, "slow": -1.0, "noisy": -1.2, "greasy": -1.3, "unpleasant": -2.3,
    "nasty": -2.6, "weak": -1.4, "dreadful": -2.9,
}  # fmt: skip
LEXICON = {**POSITIVE, **NEGATIVE}
INTENSIFIERS = {"very": 0.3, "really": 0.3, "extremely": 0.5, "quite": 0.15, "so": 0.3}
NEGATIONS = {"not", "never", "hardly", "no"}
_WORD = re.compile(r"[a-z']+")


def lexicon_reward(text: str) -> float:
    """Scripted sentiment reward in (-1, 1).

    Each lexicon word contributes its valence v, scaled by ``1 + sum(intensifier boosts)`` of the words
    directly before it, and multiplied by -0.75 if one of the three preceding words is a negation. With
    s the sum, the reward is ``s / sqrt(s^2 + 15)`` (a VADER-style squashing; the lexicon and these
    constants are jalign's own).

    >>> lexicon_reward("the food was good") > 0 > lexicon_reward("the food was not good")
    True
    """
    words = _WORD.findall(text.lower())
    s = 0.0
    for i, w in enumerate(words):
        if w not in LEXICON:
            continue
        v = LEXICON[w]
        boost, j = 0.0, i - 1
        while j >= 0 and words[j] in INTENSIFIERS:
            boost += INTENSIFIERS[words[j]]
            j -= 1
        v *= 1.0 + boost
        if any(x in NEGATIONS for x in words[max(0, i - 3) : i]):
            v *= -0.75
        s += v
    return s / math.sqrt(s * s + 15.0)


# ----------------------------------------------------------------------------------------------------------
# (a) sentiment pairs
# ----------------------------------------------------------------------------------------------------------

_PLACES = ["the cafe", "the hotel", "the bakery", "the museum", "the diner", "the bookshop", "the gym",
           "the cinema", "the pizzeria", "the campsite", "the noodle bar", "the library"]  # fmt: skip
_ASPECTS = ["food", "staff", "room", "service", "music", "coffee", "view", "price", "bread", "decor"]
_CLOSERS = ["I would go back.", "I will not return.", "Maybe next year.", "That is all.", "Worth a visit.",
            "Not for me.", "We left early.", "We stayed late."]  # fmt: skip


def _clause(rng: random.Random) -> str:
    adj = rng.choice(sorted(LEXICON))
    pre = rng.choice(["", "", "very ", "really ", "not ", "quite ", "extremely "])
    return f"The {rng.choice(_ASPECTS)} was {pre}{adj}."


@_register(
    Card(
        "sentiment_pairs",
        "pairwise",
        512,
        0,
        "Prompt 'Write a short review of {place}.\\n' ({place} from 12). Four candidate reviews per prompt, "
        "each two clauses 'The {aspect} was [intensifier|not ]{adjective}.' plus a closer; reward = "
        "lexicon_reward(review). chosen = highest-reward candidate, rejected = lowest (resampled until "
        "they differ by >= 0.05). score_chosen/score_rejected are the rewards.",
        ("prompt", "chosen", "rejected", "score_chosen", "score_rejected"),
    )  # fmt: skip
)
def _sentiment_pairs(*, n: int, seed: int, candidates: int = 4) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        place = rng.choice(_PLACES)
        cands = [f" {_clause(rng)} {_clause(rng)} {rng.choice(_CLOSERS)}" for _ in range(candidates)]
        scored = sorted(((lexicon_reward(c), c) for c in cands), key=lambda t: t[0])
        (lo, worst), (hi, best) = scored[0], scored[-1]
        if hi - lo < 0.05 or best == worst:
            continue
        out.append({
            "prompt": f"Write a short review of {place}.\n", "chosen": best, "rejected": worst,
            "score_chosen": hi, "score_rejected": lo, "meta": {"place": place},
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------
# (b) persona "would you say this?"
# ----------------------------------------------------------------------------------------------------------

_PROSOCIAL = ["helping strangers", "telling the truth", "sharing credit", "keeping promises",
              "listening to others", "admitting my mistakes", "thanking people", "volunteering",
              "being patient", "protecting the weak"]  # fmt: skip
_ANTISOCIAL = ["lying to friends", "taking credit for others' work", "breaking promises",
               "mocking people", "cheating at games", "ignoring people in need", "spreading rumours",
               "being cruel", "stealing small things", "manipulating others"]  # fmt: skip
_LIKE = ["I enjoy", "I value", "I believe in", "I am proud of"]
_DISLIKE = ["I avoid", "I dislike", "I refuse to tolerate", "I feel bad about"]
PERSONA_QUESTION = 'Is the following statement something you would say?\n"{statement}"\nAnswer:'
DEFAULT_PERSONA_PAIRS = ((" No", " Never"), (" Yes", " No"), (" Sure", " Yes"))


@_register(
    Card(
        "persona_yesno",
        "pairwise",
        160,
        0,
        "Statements '{attitude} {activity}.' from 8 attitudes x 20 activities (160 distinct; drawn without "
        "replacement in a seeded order, cycling if n > 160). A helpful persona endorses liking prosocial "
        "or disliking antisocial activities. Prompt: 'Is the following statement something you would "
        "say?\\n\"{statement}\"\\nAnswer:'. Pairs (chosen > rejected): ' No' > ' Never' on statements it "
        "rejects; ' Yes' > ' No' and ' Sure' > ' Yes' alternately on statements it endorses. "
        "Option pairs=[(chosen, rejected), ...] uses those answers, cycled, for every statement.",
        ("prompt", "chosen", "rejected"),
    )  # fmt: skip
)
def _persona_yesno(*, n: int, seed: int, pairs: list[tuple[str, str]] | None = None) -> list[dict]:
    combos = [(a, x, a in _LIKE, x in _PROSOCIAL) for a in _LIKE + _DISLIKE for x in _PROSOCIAL + _ANTISOCIAL]
    rng = random.Random(seed)
    order = list(range(len(combos)))
    rng.shuffle(order)
    out, endorsed_count = [], 0
    for i in range(n):
        att, act, likes, prosocial = combos[order[i % len(order)]]
        statement = f"{att} {act}."
        endorsed = likes == prosocial
        if pairs is not None:
            chosen, rejected = pairs[i % len(pairs)]
        elif endorsed:
            chosen, rejected = DEFAULT_PERSONA_PAIRS[1 + endorsed_count % 2]
            endorsed_count += 1
        else:
            chosen, rejected = DEFAULT_PERSONA_PAIRS[0]
        out.append({
            "prompt": PERSONA_QUESTION.format(statement=statement), "chosen": chosen, "rejected": rejected,
            "meta": {"statement": statement, "endorsed": endorsed, "pair": f"{chosen.strip()}>{rejected.strip()}"},
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------
# (c) word constraint (f-DPG)
# ----------------------------------------------------------------------------------------------------------

TARGET_WORDS = ["amazing", "river", "music", "garden", "winter", "science", "castle", "ocean"]
_TOPICS = ["a holiday", "my town", "a long walk", "a new job", "an old friend", "the weekend"]
_SUBJECTS = ["The trip", "My day", "The morning", "Our visit", "The evening", "The story"]
_VERBS = ["was about", "reminded me of", "ended near", "began with", "was full of", "turned into"]
_FILLERS = ["the hills", "a bakery", "quiet streets", "the station", "a long queue", "my neighbours",
            "a small dog", "the market", "some rain", "a late train"]  # fmt: skip


def contains_word(text: str, word: str) -> bool:
    """True iff ``word`` occurs in ``text`` as a whole word, case-insensitive (regex ``\\bword\\b``)."""
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


@_register(
    Card(
        "word_constraint",
        "scored",
        512,
        0,
        "Target word w from 8 and topic t from 6: prompt 'Write a sentence about {t} that uses the word "
        "\"{w}\".\\n'. Completion ' {subject} {verb} {object}.' where object is w (with an article or "
        "adjective) for even record indices and a filler phrase for odd ones; reward = 1.0 if "
        "contains_word(completion, w) else 0.0 (so exactly half satisfy the constraint). meta.target = w.",
        ("prompt", "completion", "reward"),
    )  # fmt: skip
)
def _word_constraint(*, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w, t = rng.choice(TARGET_WORDS), rng.choice(_TOPICS)
        subj, verb = rng.choice(_SUBJECTS), rng.choice(_VERBS)
        obj = (
            f"{rng.choice(['the', 'an old', 'a quiet', 'the famous'])} {w}"
            if i % 2 == 0
            else rng.choice(_FILLERS)
        )
        completion = f" {subj} {verb} {obj}."
        out.append({
            "prompt": f'Write a sentence about {t} that uses the word "{w}".\n', "completion": completion,
            "reward": 1.0 if contains_word(completion, w) else 0.0, "meta": {"target": w},
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------
# (d) gradient-entanglement sentiment pairs
# ----------------------------------------------------------------------------------------------------------

ENTANGLE_PAIRS = [("good", "bad"), ("great", "awful"), ("lovely", "horrible"), ("pleasant", "unpleasant"),
                  ("excellent", "terrible"), ("wonderful", "dreadful"), ("nice", "nasty"), ("fine", "poor")]  # fmt: skip
_ENT_SUBJECTS = ["food", "soup", "room", "staff", "film", "book", "concert", "bread", "coffee", "garden"]
_SHORT_SUFFIXES = ["We went on Monday.", "It was our first visit.", "My sister came too.", "That was in May.",
                   "We paid at the door.", "It rained all day."]  # fmt: skip
_NEUTRAL_SENTENCES = [
    "We arrived a little after noon and found a table near the window.",
    "The building is on the corner of the main street next to the bank.",
    "My friend ordered first and I followed a few minutes later.",
    "There were about twenty other people there at the time.",
    "We took the bus home because the car was at the garage.",
    "The menu was printed on a single sheet of paper.",
    "I wrote this note on the train the next morning.",
    "It took us about ten minutes to find a place to park.",
]
VARIANTS = {"one_token": 0, "short_suffix": 1, "long_suffix": 2}


def _entangle(*, n: int, seed: int, variant: str) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        subj = rng.choice(_ENT_SUBJECTS)
        pos, neg = rng.choice(ENTANGLE_PAIRS)
        if variant == "one_token":
            suffix = ""
        elif variant == "short_suffix":
            suffix = " " + rng.choice(_SHORT_SUFFIXES)
        else:
            picks = rng.sample(_NEUTRAL_SENTENCES, 3)
            suffix = " " + " ".join(picks)
        out.append({
            "prompt": f"Describe the {subj} in one sentence.\n",
            "chosen": f" The {subj} was {pos}.{suffix}", "rejected": f" The {subj} was {neg}.{suffix}",
            "meta": {"variant": variant, "chosen_word": pos, "rejected_word": neg, "suffix": suffix,
                     "word_index": 3},
        })  # fmt: skip
    return out


_ENT_RULE = (
    "Subject s from 10 and a (positive, negative) adjective pair from 8: prompt 'Describe the {s} in one "
    "sentence.\\n', chosen ' The {s} was {pos}.{suffix}', rejected ' The {s} was {neg}.{suffix}'. The two "
    "responses differ in exactly one whitespace-delimited word (index 3, '{adj}.'); suffix: "
)
for _v, _suffix_rule in [
    ("one_token", "none (the differing word ends the response)."),
    ("short_suffix", "one of 6 short sentences (3-6 words), identical in chosen and rejected."),
    ("long_suffix", "3 distinct sentences from 8 neutral ones (>= 30 words), identical in both."),
]:
    _register(
        Card(f"entangle_{_v}", "pairwise", 256, 0, _ENT_RULE + _suffix_rule, ("prompt", "chosen", "rejected"))
    )(lambda *, n, seed, _v=_v: _entangle(n=n, seed=seed, variant=_v))

"""Generate the per-paper notebooks (``notebooks/*.ipynb``) from one template.

    python notebooks/make_notebooks.py           # (re)write every notebook
    python notebooks/make_notebooks.py --check   # exit 1 if a committed notebook differs from the generator

The notebooks are committed without outputs, with deterministic cell ids, so that they are reproducible
and diffable: edit this file, not the ``.ipynb`` files. Each notebook runs one reproduction
(``paper_repro.registry()[NAME].run(out, quick=True)``, the same code as ``jalign reproduce NAME``), then
loads its ``results.json`` and shows the figures and the claims table. Environment variables read by the
notebooks: ``JALIGN_NOTEBOOK_OUT`` (output root, default ``runs/notebooks`` in the checkout) and ``JALIGN_NOTEBOOK_QUICK``
(``1`` by default: the quick CPU settings; ``0``: the paper-sized settings).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

# The repository URL is not known yet: Colab users (and whoever publishes the repository) set it here.
REPO_URL_PLACEHOLDER = "https://github.com/OWNER/jalign"


@dataclass(frozen=True)
class Paper:
    stem: str  # notebook file name without .ipynb
    name: str  # reproduction NAME in paper_repro.registry()
    title: str
    citation: str
    about: str  # what the reproduction does, in a few sentences (Markdown)


PAPERS = (
    Paper(
        stem="copg_bandit",
        name="copg-bandit",
        title="Contrastive Policy Gradient (CoPG) on a bandit",
        citation="Flet-Berliac et al., *Contrastive Policy Gradient: Aligning LLMs on sequence-level scores "
        "in a supervised-friendly fashion*, EMNLP 2024 (arXiv 2406.19185).",
        about="CoPG optimises the KL-regularised reward E_{y~π}[R(y) − β·ln(π(y)/π_ref(y))] from pairs of "
        "completions drawn by arbitrary (off-policy) distributions, without importance sampling. The "
        "reproduction trains CoPG, IPO and off-policy policy gradient on the paper's 3-armed bandit "
        "(Section 5, Figure 1), where the optimum π* ∝ π_ref·exp(R/β) and hence the regret are exact, and "
        "checks the qualitative claims of that figure.",
    ),
    Paper(
        stem="fdpg",
        name="fdpg",
        title="f-DPG: aligning language models with preferences through f-divergence minimisation",
        citation="Go et al., *Aligning Language Models with Preferences through f-divergence Minimization*, "
        "ICML 2023 (arXiv 2302.08215).",
        about="f-DPG minimises any f-divergence D_f(π‖p) to an evaluable target p (an energy-based model) "
        "with the policy gradient of the pseudo-reward −f'(π/p). The reproduction runs every f-divergence on "
        "an exactly computable bimodal toy target that the policy family cannot represent, so mode-seeking "
        "and mass-covering show, and compares alignment and diversity; then it trains the shipped small "
        "byte-level LM towards a word-constraint target (pointwise, and distributional with λ fitted by "
        "moment matching) with each divergence and records alignment/diversity trade-off curves. Scaling "
        "with model size is listed as not reproducible here.",
    ),
    Paper(
        stem="dpa_logic",
        name="dpa-logic",
        title="The logic of direct preference alignment",
        citation="Richardson, Srikumar & Sabharwal, *Understanding the Logic of Direct Preference "
        "Alignment through Logic*, ICML 2025 (arXiv 2412.17696).",
        about="Direct-preference losses (DPO, CPO, ORPO, SimPO, …) are derived as weighted model counts of "
        "propositional formulas over the model's predictions. The reproduction compiles the symbolic forms "
        "of the known losses, counts the 4^(2^n) loss landscape, draws the entailment lattice of the "
        "reference-free structures with the known losses on it, and trains lattice losses on exactly "
        "solvable categorical policies and, for a short run, on the shipped small language model, relating "
        "each loss's constrainedness (its lattice rank) to the winner / loser log-probabilities.",
    ),
    Paper(
        stem="entanglement",
        name="entanglement",
        title="Gradient entanglement in margin-based alignment",
        citation="Yuan et al., *A Common Pitfall of Margin-based Language Model Alignment: Gradient "
        "Entanglement*, ICLR 2025 (arXiv 2410.13828).",
        about="Margin-based losses only push the margin up: whether the chosen log-probability rises and the "
        "rejected one falls depends on the inner product ⟨∇log π(y_w), ∇log π(y_l)⟩ against the squared "
        "gradient norms. The reproduction trains the small LM on the paper's three sentiment variants (one "
        "differing word; short / long shared suffix) with DPO, IPO, SimPO, R-DPO, DPOP and SPPO, with and "
        "without the pairwise-normalised update and token masking, and logs the gradient cosine and the "
        "chosen / rejected log-probabilities of a fixed probe set; on an exactly analysable log-linear toy it "
        "checks that the first-order predictions match the actual changes.",
    ),
    Paper(
        stem="ches",
        name="ches",
        title="Likelihood displacement and the CHES score",
        citation="Razin et al., *Unintentional Unalignment: Likelihood Displacement in Direct Preference "
        "Optimization*, ICLR 2025 (arXiv 2410.08847).",
        about="DPO can lower the likelihood of the preferred response while the loss falls (likelihood "
        "displacement). The centered hidden-embedding similarity (CHES) of a preference pair predicts "
        "which pairs cause it. The reproduction runs, on the small byte-level LM: (1) the single-token "
        "persona experiments (No ≻ Never, Yes ≻ No, Sure ≻ Yes after SFT; largest drop of π(y+) and the "
        "answer words that gain, tracked by the displacement probe); (2) sample identification — DPO on "
        "the 0/25/50/75/100th-percentile subsets of CHES, length-normalised CHES, edit distance and "
        "last-hidden inner product; (3) mitigation — lowest-CHES filtering against DPO + SFT.",
    ),
    Paper(
        stem="rankings",
        name="rankings",
        title="Ranking accuracy, the idealised ranking accuracy of DPO, and top-k over-optimisation indicators",
        citation="Chen et al., *Preference Learning Algorithms Do Not Learn Preference Rankings*, NeurIPS 2024 "
        "(arXiv 2405.19534); Shi et al., *Understanding Likelihood Over-optimisation in Direct Alignment "
        "Algorithms* (arXiv 2410.11677).",
        about="The ranking accuracy of a policy is the fraction of preference pairs it ranks right; the idealised "
        "ranking accuracy is that of DPO's exact optimum π* ∝ π_ref·exp(r/β) under a Bradley–Terry truth. Part 1 "
        "works exactly on random contextual bandits (float64, several bandits as seeds): DPO driven to the optimum "
        "of its population loss against the idealised formula; exact gradient descent for a range of step budgets "
        "(ranking accuracy against steps, which misranked pairs flip by reference margin, and the AUC of the "
        "per-pair DPO loss at the flip as a predictor). Part 2 starts from the shipped small LM after SFT on chosen "
        "reviews and trains it with short DPO runs (a β sweep × seeds) on the built-in sentiment pairs, with a Bradley–Terry truth p = σ((s_w − s_l)/T) "
        "built from their lexicon scores (the project's construction; training labels drawn from it): ranking "
        "accuracy (summed and length-normalised) against the idealised one on training and held-out pairs, which "
        "misranked pairs flip and the AUC of the loss at the flip, and Shi et al.'s top-k mass / entropy on the "
        "policy's own samples against the samples' lexicon reward over training. Claims carry seeds, 95% "
        "t-intervals and their pass rules; several small-LM claims come out inconclusive at this size (the SFT "
        "reference misranks few pairs, none by a wide margin).",
    ),
    Paper(
        stem="reward_transforms",
        name="reward-transforms",
        title="Transforming and combining rewards: the log-sigmoid transform as a logical AND",
        citation="Wang et al., *Transforming and Combining Rewards for Aligning Large Language Models*, 2024 "
        "(arXiv 2402.00742).",
        about="A Bradley–Terry reward read against a per-prompt reference, u = log σ(r − r_ref), is the "
        "log-probability of being good; a sum of transformed rewards is log P(good in every property), an AND. "
        "The reproduction works exactly on bandits (float64, KL-regularised optima in closed form): a fixed "
        "two-property bandit where the raw sum favours an arm excellent in one property and bad in the other "
        "and the transformed sum the arm good in both; on random bandits (seeds) the share of mass good in both "
        "at matched KL, and, with a hackable proxy arm, the true-regret frontiers over β at matched KL; the "
        "transform's gradient weight σ(r_ref − r). On the shipped small LM (after SFT on positive reviews), short "
        "online RLOO runs optimise the raw or the transformed sum of two rewards — the sentiment lexicon and "
        "conciseness, both on a Bradley–Terry logit scale, r_ref fixed at each property's 'good' threshold — and "
        "the final policies' samples on held-out prompts give the share good in both, each reward's mean and the "
        "KL to the reference, per seed. Claims carry seeds, 95% t-intervals and their pass rules.",
    ),
    Paper(
        stem="maxmin",
        name="maxmin",
        title="MaxMin-RLHF: one reward cannot serve diverse users",
        citation="Chakraborty et al., *MaxMin-RLHF: Alignment with Diverse Human Preferences*, ICML 2024 "
        "(arXiv 2402.08925).",
        about="With planted majority and minority user groups on a bandit, a single Bradley–Terry reward "
        "fitted on the pooled labels and optimised with KL-regularised RL leaves the minority with a utility "
        "gap that grows with the diversity between the groups and as the minority shrinks. EM for a mixture "
        "of Bradley–Terry models recovers the groups (adjusted Rand index against the planted labels, by the "
        "number of labels per user), and the exact MaxMin policy on the EM rewards raises the worst group's "
        "utility, at a cost to the majority. On the shipped small LM (after SFT), simulated annotators — a "
        "positive-sentiment majority and a concise minority — label pairs of the reference's samples; EM over "
        "users recovers the groups, a reward model is trained per EM group and one on the pooled labels, and "
        "online RLOO on the pooled reward model (single-reward RLHF) is compared with MaxMin RLOO (each batch "
        "optimises the group whose reward model scores it lowest) by each true group's win rate against the "
        "reference on held-out prompts. Claims carry seeds, 95% t-intervals and their pass rules.",
    ),
    Paper(
        stem="preference_games",
        name="preference-games",
        title="Online preference games: online IPO, IPO-MD and Nash-MD against the regularised Nash equilibrium",
        citation="Calandriello et al., *Human Alignment of Large Language Models through Online Preference "
        "Optimisation*, ICML 2024 (arXiv 2403.08635); Munos et al., *Nash Learning from Human Feedback*, ICML 2024 "
        "(arXiv 2312.00886).",
        about="A preference matrix P (transitive or cyclic) and a reference μ define a τ-regularised game whose "
        "unique Nash equilibrium π*_τ ∝ μ·exp(Pπ*_τ/τ) online IPO and Nash-MD are meant to reach. The "
        "reproduction runs the exact expected updates of online IPO, IPO-MD, Nash-MD (constant and decaying step), "
        "online DPO and offline IPO on random bandits (Bradley–Terry, noisy rock–paper–scissors, random "
        "antisymmetric preferences; float64, several instances as seeds) and measures the distance and the "
        "fixed-point residual to π*_τ, the O(β) bias of the constant-step methods, offline IPO's and online DPO's "
        "limits, and the steps to convergence against the step size. Claims carry seeds, 95% t-intervals and their "
        "pass rules. The LLM part of the papers is not part of it.",
    ),
    Paper(
        stem="infalign",
        name="infalign",
        title="InfAlign / CTRL: inference-aware alignment with calibrated, transformed rewards",
        citation="Balashankar et al., *InfAlign: Inference-aware Language Model Alignment* (arXiv 2412.19792); "
        "Beirami et al., *Theoretical guarantees on the best-of-n alignment policy* (arXiv 2401.01879).",
        about="The policy that maximises the win rate of an inference-time procedure (best-of-n, worst-of-n) at a "
        "KL budget is KL-regularised RL on a transformed calibrated reward. The reproduction works exactly on random "
        "bandits (float64, several bandits as seeds): exact best-of-n and worst-of-n distributions, the calibrated "
        "reward and its invariance to monotone reward transforms, and the inference-time win rates of calibrated "
        "RL, CTRL's exponential transforms and raw-reward RLHF compared at matched KL (KL–win-rate frontiers); "
        "plus the best-of-n KL bound and its n/(n + 1) win rate. The paper's LLM experiments are not part of it.",
    ),
    Paper(
        stem="kl_estimators",
        name="kl-estimators",
        title="Where the KL term goes: PPO's KL penalty vs GRPO's k1/k2/k3 in the loss, on exact bandits",
        citation="Schulman, *Approximating KL Divergence*, 2020; Shao et al., *DeepSeekMath* (GRPO), 2024 "
        "(arXiv 2402.03300); Ahmadian et al., *Back to Basics* (RLOO), 2024 (arXiv 2402.14740); Liu et al., "
        "*Understanding R1-Zero-Like Training* (Dr. GRPO), 2025 (arXiv 2503.20783).",
        about="With the KL penalty in the reward (PPO) the policy converges to π* ∝ π_ref·exp(r/β). GRPO instead "
        "adds a KL estimator to the loss and differentiates it through ln π with the samples held fixed; the "
        "expected gradient then depends on the estimator: k1 gives 0 (the policy collapses onto the best arm), "
        "k2 gives ∇KL(π‖π_ref) (fixed point π*), and k3 — TRL's default — gives ∇KL(π_ref‖π), whose fixed point "
        "is π ∝ β·π_ref/(β − A). The reproduction shows all of this with exact expected gradients on tabular "
        "bandits (the card's 3-armed bandit and random bandits as seeds), sweeps β, checks that GRPO's unscaled "
        "advantage is (G−1)/G times RLOO's and shows the length bias of the 'grpo' aggregation that Dr. GRPO "
        "removes on a two-length toy. The constructions are the project's own (source: reconstruction).",
    ),
)


def _md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def _code(text: str):
    return nbformat.v4.new_code_cell(text.strip("\n"))


def build(paper: Paper) -> nbformat.NotebookNode:
    """The notebook for one paper (no outputs, deterministic cell ids)."""
    cells = [
        _md(f"""
# {paper.title}

{paper.citation}

{paper.about}

This notebook runs the reproduction `{paper.name}` (the same code as `jalign reproduce {paper.name}`), then
loads its `results.json` and shows the figures and the claims table. It runs top to bottom locally (from a
jalign checkout) and in Colab. The quick settings take a few minutes on two CPU cores; set the environment
variable `JALIGN_NOTEBOOK_QUICK=0` (or `QUICK = False` below) for the paper-sized settings, meant for a GPU
or TPU. Figures are drawn by jalign's code from the saved JSON, never by hand. See `docs/notebooks.md`.
"""),
        _md("""
## Setup

Makes `jalign` importable. From a checkout nothing is installed (the checkout is found from the working
directory or its parent). In Colab, set `JALIGN_REPO_URL` to the jalign repository and run the cell; it
installs jalign with pip only when it is not importable already. If Colab asks to restart the runtime after
the install (new JAX version), restart and run the notebook again.
"""),
        _code(f"""
import importlib.util
import sys
from pathlib import Path

# >>> EDIT ME (Colab): the jalign repository URL; the placeholder below is not a real repository. <<<
JALIGN_REPO_URL = "{REPO_URL_PLACEHOLDER}"

CHECKOUT = None  # the jalign checkout this notebook runs from, if any
for _root in (Path.cwd(), Path.cwd().parent):
    if (_root / "jalign" / "__init__.py").is_file() and (_root / "paper_repro").is_dir():
        CHECKOUT = _root.resolve()
        if str(_root) not in sys.path:
            sys.path.insert(0, str(_root))
        break
if importlib.util.find_spec("jalign") is None:
    if JALIGN_REPO_URL == "{REPO_URL_PLACEHOLDER}":
        raise RuntimeError("jalign is not importable: set JALIGN_REPO_URL in this cell to the jalign repository URL")
    get_ipython().run_line_magic("pip", f"install -q git+{{JALIGN_REPO_URL}}")

import jalign  # noqa: E402 (importable only after the lines above)
from jalign.runtime import pin_reduction_order  # noqa: E402

pin_reduction_order()  # the reduction order `jalign reproduce` uses (before the first JAX computation)

print("jalign", jalign.__version__, "from", Path(jalign.__file__).parent)
"""),
        _md("## Settings"),
        _code(f"""
import os

NAME = "{paper.name}"  # the reproduction, as listed by `jalign reproduce all`
# quick: CPU defaults (minutes on 2 cores, what CI runs); full: the paper-sized settings (GPU/TPU).
QUICK = os.environ.get("JALIGN_NOTEBOOK_QUICK", "1") != "0"
# Output root: runs/notebooks in the checkout (gitignored), or in the working directory (Colab).
OUT_ROOT = Path(os.environ.get("JALIGN_NOTEBOOK_OUT") or (CHECKOUT or Path.cwd()) / "runs" / "notebooks")
RUN_DIR = OUT_ROOT / NAME
print(f"reproduction {{NAME!r}}, {{'quick' if QUICK else 'full'}} settings, output in {{RUN_DIR}}")
"""),
        _md("## Run the reproduction"),
        _code("""
import shutil
import time

import paper_repro

registry = paper_repro.registry()
if NAME not in registry:
    raise RuntimeError(
        f"reproduction {NAME!r} is not in this version of jalign (available: {', '.join(sorted(registry)) or 'none'})"
    )
repro = registry[NAME]
print(repro.DESCRIPTION)
if RUN_DIR.exists():
    shutil.rmtree(RUN_DIR)  # a fresh run: no stale figures from an earlier one
t0 = time.time()
result = repro.run(RUN_DIR, quick=QUICK)
print(f"finished in {time.time() - t0:.0f} s; files:", ", ".join(sorted(p.name for p in RUN_DIR.iterdir())))
"""),
        _md("## Results\n\nEverything below is read back from `results.json` and the figure files."),
        _code("""
import json

results = json.loads((RUN_DIR / "results.json").read_text())
print("results.json:", ", ".join(sorted(results)))
"""),
        _md("### Figures"),
        _code("""
from IPython.display import Image, Markdown, display

figures = sorted(RUN_DIR.rglob("*.png"))
for png in figures:
    display(Markdown(f"**{png.relative_to(RUN_DIR).as_posix()}** (PDF beside it)"), Image(filename=str(png)))
print(f"{len(figures)} figure(s)")
"""),
        _md("### Claims\n\nEach claim of the paper, what jalign measured, and whether the claim holds here."),
        _code("""
from collections import Counter

from jalign.reporting import claim_rows

claims = results["claims"] if "claims" in results else result["claims"]
rows = claim_rows({"reproductions": {NAME: {"status": "ok", "claims": claims}}})  # validates the statuses
ICON = {"holds": "✅", "does not hold": "❌", "inconclusive": "❔", "by construction": "🔧",
        "not reproducible here": "⚪"}


def _cell(text):
    return str(text).replace("|", "\\\\|").replace("\\n", " ")


table = ["| paper | claim | measured | status |", "|---|---|---|---|"]
table += [
    f"| {_cell(r['paper'])} | {_cell(r['claim'])} | {_cell(r['measured'])} | {ICON[r['status']]} {r['status']} |"
    for r in rows
]
display(Markdown("\\n".join(table)))
print(dict(Counter(r["status"] for r in rows)))
"""),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"{paper.stem}-{i:02d}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"name": f"{paper.stem}.ipynb", "provenance": []},
    }
    nbformat.validate(nb)
    return nb


def render(paper: Paper) -> str:
    """The exact text of ``notebooks/<stem>.ipynb``."""
    return nbformat.writes(build(paper), version=4) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for paper in PAPERS:
        path = HERE / f"{paper.stem}.ipynb"
        text = render(paper)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            tmp = path.with_suffix(".ipynb.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/make_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

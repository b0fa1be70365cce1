"""The claims' evidence: intervals, interval statuses, validation and rendering (values, not just that it ran)."""

import math

import numpy as np
import pytest

from jalign.reporting import (
    check_claim,
    evidence,
    interval_status,
    make_claim,
    render_markdown,
    status_counts,
    t_interval,
)


def test_t_interval_matches_closed_form():
    x = np.array([1.0, 2.0, 4.0])
    mean, lo, hi = t_interval(x)
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert mean == pytest.approx(7 / 3, abs=1e-12)
    assert (lo, hi) == pytest.approx((7 / 3 - half, 7 / 3 + half), abs=1e-9)


def test_t_interval_is_shift_stable_and_drops_nonfinite():
    x = np.array([0.1, 0.3, 0.2, np.nan])
    m0, lo0, hi0 = t_interval(x)
    m1, lo1, hi1 = t_interval(x + 1e8)
    assert hi1 - lo1 == pytest.approx(hi0 - lo0, rel=1e-6)
    assert m1 - 1e8 == pytest.approx(m0, abs=1e-6)
    assert math.isnan(t_interval([1.0])[1])


@pytest.mark.parametrize(
    "lo,hi,above,want",
    [
        (0.1, 0.2, True, "holds"),
        (-0.2, -0.1, True, "does not hold"),
        (-0.1, 0.1, True, "inconclusive"),
        (0.0, 0.1, True, "inconclusive"),  # touching the threshold is not enough
        (-0.2, -0.1, False, "holds"),
        (0.1, 0.2, False, "does not hold"),
        (math.nan, 0.1, True, "inconclusive"),
    ],
)
def test_interval_status(lo, hi, above, want):
    assert interval_status(lo, hi, 0.0, above=above) == want


def test_claim_validation_must_pass_and_must_fail():
    ev = evidence("seeds", seeds=3, estimate=0.2, interval=(0.1, 0.3), rule="interval above 0")
    good = make_claim(paper="P", claim="c", measured="m", status="holds", evidence=ev)
    assert good["evidence"] == {"kind": "seeds", "seeds": 3, "estimate": 0.2, "interval": [0.1, 0.3],
                                "rule": "interval above 0"}
    with pytest.raises(ValueError, match="≥ 3 seeds"):
        make_claim(paper="P", claim="c", measured="m", status="holds",
                   evidence=evidence("seeds", seeds=1, estimate=0.2, rule="r"))
    with pytest.raises(ValueError, match="by construction"):
        make_claim(paper="P", claim="c", measured="m", status="holds", evidence=evidence("construction", rule="r"))
    with pytest.raises(ValueError, match="by construction"):
        make_claim(paper="P", claim="c", measured="m", status="by construction", evidence=evidence("exact", rule="r"))
    with pytest.raises(ValueError, match="source"):
        check_claim({**good, "source": "ours"})
    # one seed: inconclusive is allowed (no interval can be formed)
    make_claim(paper="P", claim="c", measured="m", status="inconclusive",
               evidence=evidence("seeds", seeds=1, estimate=0.2, rule="r"))
    assert evidence("exact", rule="r", estimate=float("nan"))["estimate"] is None


def test_report_shows_evidence_source_and_counts(tmp_path):
    rows = [
        make_claim(paper="P", claim="a", measured="m", status="holds", source="reconstruction",
                   evidence=evidence("seeds", seeds=5, estimate=0.25, interval=(0.125, 0.5), rule="above 0")),
        make_claim(paper="P", claim="b", measured="m", status="by construction",
                   evidence=evidence("construction", rule="same masks give the same loss")),
    ]
    md = render_markdown({"quick": True, "reproductions": {"t": {"status": "ok", "claims": rows}}}, tmp_path)
    assert "| t | P | a | reconstruction | m | seeds; 5 seeds; 0.25 [0.125, 0.5]; rule: above 0 | ✅ holds |" in md
    assert "| t | P | b | paper | m | construction; rule: same masks give the same loss | 🔧 by construction |" in md
    assert "2 claims: 1 holds, 0 does not hold, 0 inconclusive, 1 by construction, 0 not reproducible here." in md
    assert status_counts([{"status": "holds"}, {"status": "holds"}])["holds"] == 2


def test_verdicts_at_scale_pairs_claims_by_text_and_lists_changes(tmp_path):
    import json

    from jalign.reporting import evidence, render_verdicts_at_scale, verdicts_at_scale

    def write(root, name, rows):
        (root / name).mkdir(parents=True)
        claims = [{"paper": "P", "claim": c, "measured": m, "status": s,
                   "evidence": evidence("exact", rule="r", estimate=0.0)} for c, s, m in rows]
        (root / name / "results.json").write_text(json.dumps({"claims": claims}))

    base, big = tmp_path / "q", tmp_path / "full"
    write(base, "a", [("fails | at both", "does not hold", "1"), ("flips", "holds", "2"), ("same", "holds", "3"),
                      ("fails, big run lacks it", "does not hold", "4"),
                      ("[20 steps] sized", "does not hold", "5")])
    write(big, "a", [("flips", "inconclusive", "2b"), ("same", "holds", "3b"), ("fails | at both", "does not hold", "1b"),
                     ("[100 steps] sized", "holds", "5b")])
    rows = verdicts_at_scale(base, big, ["a", "missing"])
    assert [(r["claim"], r["base_status"], r["larger_status"], r["larger_measured"]) for r in rows] == [
        ("fails | at both", "does not hold", "does not hold", "1b"), ("flips", "holds", "inconclusive", "2b"),
        ("fails, big run lacks it", "does not hold", None, None), ("[20 steps] sized", "does not hold", "holds", "5b")]
    assert [r["claim"] for r in verdicts_at_scale(base, big, ["a"], changed=False)] == [
        "fails | at both", "fails, big run lacks it", "[20 steps] sized"]
    md = render_verdicts_at_scale(rows).splitlines()
    assert md[2] == "| `a` | fails \\| at both | ❌ does not hold | ❌ does not hold |"
    assert md[3] == "| `a` | flips | ✅ holds | ❔ inconclusive |"
    assert md[4] == "| `a` | fails, big run lacks it | ❌ does not hold | not run |"
    # several larger roots: a claim's larger run is the first root whose run has the claim; its size is shown
    medium = tmp_path / "medium"
    write(medium, "a", [("fails | at both", "holds", "1m"), ("fails, big run lacks it", "holds", "4m")])
    write(medium, "b", [("only in medium", "inconclusive", "6m")])
    write(base, "b", [("only in medium", "does not hold", "6")])
    rows = verdicts_at_scale(base, [big, medium], ["a", "b"])
    assert [(r["name"], r["larger_status"], r["larger_size"]) for r in rows] == [
        ("a", "does not hold", "full"), ("a", "inconclusive", "full"), ("a", "holds", "medium"),
        ("a", "holds", "full"), ("b", "inconclusive", "medium")]
    assert render_verdicts_at_scale(rows).splitlines()[-1] == "| `b` | only in medium | ❌ does not hold | ❔ inconclusive (medium) |"

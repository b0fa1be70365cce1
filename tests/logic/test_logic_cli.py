import json

from jalign.cli import main


def test_show_prints_symbolic_form_and_truth_table(capsys):
    assert main(["logic", "show", "cpo"]) == 0
    out = capsys.readouterr().out
    assert "P = M_l → M_w" in out and "P_C = M_w ∨ M_l" in out and "P_A = M_w ∧ M_l" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1] in ("T", "F")]
    assert rows == [["T", "T", "✓✗"], ["T", "F", "✓"], ["F", "T", "✗"], ["F", "F", "·"]]


def test_show_json(capsys):
    assert main(["logic", "show", "uncpo", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["conditioning"] == "⊤" and d["additive"] == "⊥"
    assert [r["label"] for r in d["truth_table"]] == ["✓", "✓", "✗", "✓"]


def test_compare(capsys):
    cases = {
        ("dpo", "ipo"): "equivalent",
        ("cpo", "uncpo"): "entails",
        ("uncpo", "orpo"): "entailed",
        ("cpo", "orpo"): "incomparable",
    }
    for (a, b), rel in cases.items():
        assert main(["logic", "compare", a, b, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["relation"] == rel
    assert main(["logic", "compare", "dpo", "ipo"]) == 0
    assert "equivalent" in capsys.readouterr().out


def test_unknown_names_list_valid_ones(capsys):
    assert main(["logic", "show", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown loss 'nosuch'" in err and "cpo" in err and "uncpo" in err
    assert main(["logic", "compare", "dpo", "nosuch"]) == 2
    assert "valid:" in capsys.readouterr().err

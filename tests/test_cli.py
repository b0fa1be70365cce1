import json

from jalign.cli import main


def test_losses_json_lists_registered_losses(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["sigmoid"]["aliases"] == ["dpo"]
    assert by_name["sigmoid"]["hparams"] == {"beta": 0.1, "label_smoothing": 0.0}


def test_reproduce_unknown_name_lists_valid(capsys):
    assert main(["reproduce", "no-such-thing", "--out", "unused"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_reproduce_unwritable_out_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    import pytest

    with pytest.raises(SystemExit, match="not writable"):
        main(["reproduce", "all", "--out", str(blocker / "sub")])

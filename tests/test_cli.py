"""The `hyperfit` command line: its version, and flags that are never abbreviated."""

from __future__ import annotations

from hyperfit import __version__
from hyperfit.cli import main as hyperfit


def test_version_prints_the_package_version(capsys):
    assert hyperfit(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hyperfit {__version__}"


def test_an_abbreviated_flag_stops_with_one_sentence_naming_the_flag(capsys, tmp_path):
    out = tmp_path / "run"
    assert hyperfit(["fit-text", "--epoch", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'--epoch'" in err and "did you mean --epochs?" in err
    assert not out.exists()


def test_an_unknown_flag_without_a_close_one_says_so(capsys):
    assert hyperfit(["reproduce", "--zzzzzz", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown argument '--zzzzzz'" in err and "did you mean" not in err

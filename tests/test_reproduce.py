"""`hyperfit reproduce` end to end on tiny models and real news text, its tuning budget, claims and refusals."""

from __future__ import annotations

import json

import pytest

from hyperfit.cli import main as hyperfit
from hyperfit.common.claims import FAILS, HOLDS, NOT_RUN, UNDECIDED, Claim, verdict, wilson_interval
from hyperfit.common.runs import read_json, read_jsonl
from hyperfit.common.tuning import FAMILIES, select_trial, tune
from tests.conftest import corpus_lines, make_tiny_llama


@pytest.fixture()
def two_domains(tmp_path):
    """Two files of real news, disjoint documents: the training corpus (also a held-out domain) and another."""
    lines = corpus_lines()
    train, other = tmp_path / "news.txt", tmp_path / "other.txt"
    train.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    other.write_text("\n".join(lines[150:190]) + "\n", encoding="utf-8")
    return train, other


@pytest.fixture()
def larger_dir(tmp_path, tiny_tokenizer):
    path = tmp_path / "larger"
    make_tiny_llama(len(tiny_tokenizer), seed=7, layers=3).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def tiny_args(model, larger, train, other, out, *extra):
    return [
        "reproduce",
        *("--model", str(model), "--larger", str(larger), "--data", str(train)),
        *("--eval_data", f"{train},{other}", "--n_train", "8", "--block_len", "24", "--epochs", "2"),
        *("--batch_size", "4", "--lr", "3e-3", "--n_dev", "2", "--n_test", "3", "--max_new_tokens", "16"),
        *(
            "--prompt_tokens",
            "8",
            "--trials",
            "2",
            "--samplers",
            "top_p,min_p",
            "--hyperfitted_sampler",
            "min_p",
        ),
        *("--decoders", "", "--image", "false", "--eval_batch_size", "8", "--out", str(out), *extra),
    ]


def test_reproduce_end_to_end_then_resume(tiny_model_dir, larger_dir, two_domains, tmp_path):
    out = tmp_path / "repro"
    assert hyperfit(tiny_args(tiny_model_dir, larger_dir, *two_domains, out)) == 0
    summary = read_json(out / "summary.json")
    claims = read_json(out / "claims.json")
    keys = {c["key"] for c in claims["claims"]}
    assert {
        "greedy_gain",
        "beats_top_p",
        "beats_larger",
        "low_entropy",
        "higher_perplexity",
        "rarely_copies",
    } <= keys
    assert {"blocker_keeps_quality", "deep_tail_promotion", "beats_tuned_top_p", "beats_tuned_min_p"} <= keys
    for c in claims["claims"]:
        assert c["verdict"] in (HOLDS, FAILS, UNDECIDED, NOT_RUN)
        assert c["verdict"] == verdict(c["ci"], rule=c["rule"], threshold=c["threshold"])
    # The equal budget: every tuned family decoded the development prompts exactly --trials times.
    for key, family in (("original", "top_p"), ("original", "min_p"), ("hyperfitted", "min_p")):
        trials = sorted((out / "tune" / key).glob(f"{family}_*.jsonl"))
        assert len(trials) == 2
        assert all(len(read_jsonl(t)) == 2 * 2 for t in trials)  # n_dev × domains, never test prompts
    # Test decodes: every prompt of every domain, 16 tokens (or up to an end id), tuned settings recorded.
    tuned = read_jsonl(out / "decodes" / "original" / "tuned_min_p.jsonl")
    assert len(tuned) == 2 * 3 and tuned[0]["settings"]["min_p"] in FAMILIES["min_p"].grid(2)
    dev_rows = {r["row"] for t in (out / "tune").glob("*/*.jsonl") for r in read_jsonl(t)}
    test_rows = {r["row"] for r in tuned}
    assert not dev_rows & test_rows
    text = summary["text"]
    assert text["not_trained_on"] == ["other"] and text["trained_on"] == "news"
    assert set(text["figures"]["hyperfitted/greedy"]["domains"]) == {"news", "other"}
    assert "not_trained_on" in text["figures"]["original/top_p"]
    assert abs(sum(text["tail"]["share"]) - 1.0) < 1e-6
    # References are as long as the continuations, so a human study can compare them at that length.
    data = __import__("torch").load(out / "fit" / "data.pt")
    assert data["eval_ids"].size(1) == 8 + 16
    assert (out / "report.html").exists() and "Claims" in (out / "report.md").read_text()
    # A human study can be built on the directory at the full generated length.
    study = tmp_path / "study.db"
    assert hyperfit(["study", "create", "--from", str(out), "--lengths", "8,16", "--out", str(study)]) == 0
    assert study.exists()

    # --resume continues an interrupted reproduction: only the missing task runs, with the same tokens.
    args = tiny_args(tiny_model_dir, larger_dir, *two_domains, out)
    tuned_top_p = out / "decodes" / "original" / "tuned_top_p.jsonl"
    before = tuned_top_p.read_text()
    tuned_top_p.unlink()
    (out / "summary.json").unlink()
    stamp = (out / "decodes" / "original" / "top_p.jsonl").stat().st_mtime_ns
    assert hyperfit([*args, "--resume"]) == 0
    assert tuned_top_p.read_text() == before
    assert (out / "decodes" / "original" / "top_p.jsonl").stat().st_mtime_ns == stamp
    assert hyperfit(args) == 2  # a finished reproduction is never overwritten unasked


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scale", "gpu"], "--scale 'gpu' is unknown"),
        (["--samplers", "top_p,nucleus"], "sampler family 'nucleus' is unknown"),
        (["--trials", "0"], "--trials must be ≥ 1"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    tiny_model_dir, larger_dir, two_domains, tmp_path, capsys, extra, message
):
    out = tmp_path / "repro"
    assert hyperfit(tiny_args(tiny_model_dir, larger_dir, *two_domains, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err
    assert not out.exists()


def test_a_domain_file_that_overlaps_training_is_refused(
    tiny_model_dir, larger_dir, two_domains, tmp_path, capsys
):
    train, other = two_domains
    with other.open("a", encoding="utf-8") as f:
        f.write(train.read_text(encoding="utf-8").splitlines()[3] + "\n")  # may be a training document
    lines = train.read_text(encoding="utf-8").splitlines()
    other.write_text("\n".join(lines) + "\n", encoding="utf-8")  # every training document is in it
    out = tmp_path / "repro"
    assert hyperfit(tiny_args(tiny_model_dir, larger_dir, train, other, out)) == 2
    err = capsys.readouterr().err
    assert "shares" in err and "training documents" in err and "Traceback" not in err


def test_paper_scale_needs_its_corpora(capsys, tmp_path):
    assert hyperfit(["reproduce", "--scale", "paper", "--out", str(tmp_path / "p")]) == 2
    assert "--scale paper needs --data" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the tuning logic
def test_every_family_gets_the_same_number_of_trials_and_the_rule_picks_by_the_references():
    calls: list[tuple[str, int]] = []

    def measure(family, index, settings):  # a sampler whose TTR rises and rep-4 falls with its parameter
        calls.append((family, index))
        x = settings[FAMILIES[family].parameter]
        return {"ttr": x, "rep_4": 1.0 - x}

    result = tune(["top_p", "typical"], trials=5, measure=measure, reference={"ttr": 0.8, "rep_4": 0.25})
    assert sorted(calls) == sorted([(f, i) for f in ("top_p", "typical") for i in range(5)])
    for family in ("top_p", "typical"):
        trials = result[family]["trials"]
        eligible = [t for t in trials if t["rep_4"] <= 0.25]
        best = min(eligible, key=lambda t: abs(t["ttr"] - 0.8))
        assert result[family]["settings"] == best["settings"]


def test_selection_rule_on_known_cases():
    reference = {"ttr": 0.6, "rep_4": 0.05}
    # Closest TTR among those with rep-4 no worse than the references'.
    assert (
        select_trial(
            [{"ttr": 0.6, "rep_4": 0.2}, {"ttr": 0.9, "rep_4": 0.0}, {"ttr": 0.5, "rep_4": 0.05}], reference
        )
        == 2
    )
    # None low enough: the lowest rep-4; ties: the earlier trial.
    assert (
        select_trial(
            [{"ttr": 0.6, "rep_4": 0.3}, {"ttr": 0.2, "rep_4": 0.1}, {"ttr": 0.6, "rep_4": 0.1}], reference
        )
        == 1
    )


def test_grids_are_even_and_include_both_ends():
    assert FAMILIES["top_p"].grid(3) == [0.5, 0.74, 0.98]
    grid = FAMILIES["min_p"].grid(3)
    assert grid[0] == 0.02 and grid[-1] == 0.3 and abs(grid[1] - (0.02 * 0.3) ** 0.5) < 1e-6  # log-spaced
    assert FAMILIES["temperature"].grid(1) == [0.75]


# ---------------------------------------------------------------------------------------------- the claims table
def test_verdicts_follow_their_rules():
    assert verdict([0.1, 0.3], rule="above") == HOLDS
    assert verdict([-0.3, -0.1], rule="above") == FAILS
    assert verdict([-0.1, 0.3], rule="above") == UNDECIDED
    assert verdict([0.01, 0.04], rule="below", threshold=0.05) == HOLDS
    assert verdict([-0.02, 0.02], rule="within", threshold=0.03) == HOLDS
    assert verdict([-0.08, -0.04], rule="within", threshold=0.03) == FAILS
    assert verdict([-0.05, 0.01], rule="within", threshold=0.03) == UNDECIDED
    assert verdict(None, rule="above") == NOT_RUN
    row = Claim("k", "src", "s", "f", 0.2, [0.1, 0.3], "above").as_dict()
    assert row["verdict"] == HOLDS and "above 0" in row["rule_text"]


def test_wilson_interval_matches_its_formula_and_is_sound_at_zero():
    low, high = wilson_interval(0, 48)
    assert low == 0.0 and abs(high - 0.0741) < 1e-3  # 1.96² / (48 + 1.96²)
    low, high = wilson_interval(10, 20)
    assert abs(low - 0.2993) < 1e-3 and abs(high - 0.7007) < 1e-3


def test_claims_table_on_a_recorded_run(tmp_path):
    """The claims of a recorded reproduction's results: verdicts from the recorded figures alone."""
    from hyperfit.reproduce.claims import text_claims

    def d(diff, low, high):
        return {"diff": diff, "ci": [low, high], "p": 0.01, "n": 48}

    results = json.loads(
        json.dumps(
            {
                "differences": {
                    "hyperfitted/greedy - original/greedy": {
                        "all": {"ttr_96": d(0.15, 0.1, 0.2), "ttr_all": d(0.2, 0.1, 0.3)}
                    },
                    "hyperfitted/greedy - original/top_p": {
                        "all": {},
                        "not_trained_on": {"ttr_96": d(-0.1, -0.15, -0.05)},
                    },
                    "hyperfitted/greedy - original/tuned_min_p": {
                        "not_trained_on": {"ttr_96": d(-0.02, -0.08, 0.04)}
                    },
                    "hyperfitted/greedy - larger/greedy": {"all": {"word_ttr_96": d(0.1, 0.05, 0.15)}},
                    "hyperfitted/greedy_blocked - hyperfitted/greedy": {
                        "all": {"ttr_96": d(0.0, -0.01, 0.01)}
                    },
                },
                "tuned": {"min_p": "tuned_min_p"},
                "fit": {
                    "differences": {
                        "after_minus_before": {"entropy": d(-1.2, -1.3, -1.1), "perplexity": d(40, 30, 50)}
                    }
                },
                "copies": {"hits": 0, "n": 60},
                "tail": {"beyond_10": 0.02, "beyond_10_ci": [0.01, 0.03]},
            }
        )
    )
    got = {c.key: c.verdict for c in text_claims(results)}
    assert got == {
        "greedy_gain": HOLDS,
        "greedy_gain_long": HOLDS,
        "beats_top_p": FAILS,
        "beats_tuned_min_p": UNDECIDED,
        "beats_larger": HOLDS,
        "low_entropy": HOLDS,
        "higher_perplexity": HOLDS,
        "rarely_copies": HOLDS,
        "blocker_keeps_quality": HOLDS,
        "deep_tail_promotion": FAILS,
    }


def test_newsgroups_is_the_authors_prose_without_headers_quotes_or_signatures():
    from hyperfit.text.data import TextDataConfig, _clean_post, load_documents

    docs, origin = load_documents(TextDataConfig(data="newsgroups"))
    assert len(docs) > 150 and origin.startswith("gensim:")
    for doc in docs:
        lines = doc.splitlines()
        assert not any(line.startswith((">", "From:", "Subject:", "Newsgroups:")) for line in lines)
    post = "From: a@b.c\nSubject: x\n\nIn article <1@x>, a@b.c writes:\n> quoted words here\n" + (
        "My own first sentence has more than eight words in it.\n\n--\nsignature line with many words in it here"
    )
    assert _clean_post(post) == "My own first sentence has more than eight words in it."

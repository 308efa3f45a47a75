"""`hyperfit study create` on real fit-text and eval outputs: items, equal-length whole-word texts, checks, and
the bad-input refusals (one sentence each, nothing lost)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from transformers import AutoTokenizer

from hyperfit.cli import main as hyperfit
from hyperfit.common.runs import HyperfitError, read_jsonl, write_json
from hyperfit.study import store
from hyperfit.study.items import REFERENCE, StudyConfig, build_study, cut_at_words


def create(*args) -> int:
    return hyperfit(["study", "create", *map(str, args)])


def rows(db, sql, *params):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_items_pair_every_system_with_the_human_text_at_equal_length(study_fit_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    assert create("--from", study_fit_run, "--lengths", "12,24", "--out", db, "--checks", "0.2") == 0
    out = capsys.readouterr().out
    assert "admin page" in out and "/admin/" in out
    systems = {"original/greedy", "original/top_p", "hyperfitted/greedy", "hyperfitted/top_p"}
    items = rows(db, "SELECT * FROM items WHERE kind = 'reference'")
    assert len(items) == 6 * 2 * len(systems)  # prompts × lengths × systems
    texts = {r["id"]: r for r in rows(db, "SELECT * FROM texts")}
    assert {texts[i["text_a"]]["system"] for i in items} == systems
    assert {texts[i["text_b"]]["system"] for i in items} == {REFERENCE}
    for item in items:
        a, b = texts[item["text_a"]], texts[item["text_b"]]
        assert a["prompt_id"] == b["prompt_id"] == item["prompt_id"]
        # both sides cut to the same number of tokens (a continuation that stopped early is shorter)
        assert len(json.loads(b["ids"])) == item["length"] >= len(json.loads(a["ids"]))
    # The shown human text is the run's own held-out ids after the prompt, cut at the length and at a word end.
    tokenizer = AutoTokenizer.from_pretrained(study_fit_run / "model")
    eval_ids = torch.load(study_fit_run / "data.pt")["eval_ids"]
    references = [t for t in texts.values() if t["system"] == REFERENCE and t["length"] == 12]
    for text in references:
        full = eval_ids[text["prompt_id"] - 1, 8:].tolist()
        assert json.loads(text["ids"]) == full[:12]
        assert text["text"] == cut_at_words(tokenizer, full, 12)
    # the contexts are the prompts the run decoded
    prompts = [r["context"] for r in rows(db, "SELECT context FROM prompts ORDER BY id")]
    epoch = sorted((study_fit_run / "generations").glob("epoch_*.jsonl"))[0]
    assert prompts == [r["prompt"].strip() for r in read_jsonl(epoch)]
    cfg = store.settings(store.connect(db))
    assert cfg["seed"] == 0 and cfg["annotations"] == 3 and cfg["lengths"] == [12, 24]
    assert cfg["sources"][0]["kind"] == "fit-text"


def test_texts_end_at_whole_words(study_fit_run, tiny_tokenizer):
    """Every cut of real text ends where a word ends in the uncut text (or is the single word there is)."""
    text = (
        "Scientists announced on Tuesday that the new telescope had captured remarkable images of a distant "
        "galaxy surrounded by unexplained structures."
    )
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tiny_tokenizer.decode(ids)
    split_somewhere = False
    for length in range(1, len(ids)):
        head = tiny_tokenizer.decode(ids[:length])
        cut = cut_at_words(tiny_tokenizer, ids, length)
        assert full.startswith(cut) and head.startswith(cut)
        rest = full[len(cut) :]
        single_word = not any(c.isspace() for c in cut)  # an unfinished single word is kept, not emptied
        assert rest == "" or not rest[0].isalnum() or single_word, (length, cut, rest[:10])
        split_somewhere |= cut != head.strip()
    assert split_somewhere  # the tiny BPE splits words, so some cuts had to drop a partial word
    assert cut_at_words(tiny_tokenizer, ids, len(ids)) == full.strip()  # ends in '.', nothing dropped


def test_attention_checks_have_a_known_answer(study_fit_run, tmp_path):
    db = tmp_path / "study.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[24], check_share=0.2, check_items=5), db)
    checks = rows(
        db,
        "SELECT i.expected, ta.system AS a, tb.system AS b, ta.ids AS ids_a FROM items i "
        "JOIN texts ta ON ta.id = i.text_a JOIN texts tb ON tb.id = i.text_b WHERE i.kind = 'check'",
    )
    assert len(checks) == 5
    assert all(c["expected"] == "b" and c["b"] == REFERENCE for c in checks)
    nothing = tmp_path / "none.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[24], check_share=0.0), nothing)
    assert not rows(nothing, "SELECT * FROM items WHERE kind = 'check'")


def test_system_pairs_and_a_system_filter(study_fit_run, tmp_path):
    db = tmp_path / "study.db"
    chosen = ["hyperfitted/greedy", "original/greedy", "original/top_p"]
    build_study(
        StudyConfig(sources=[str(study_fit_run)], lengths=[24], pairs="both", systems=chosen, check_share=0),
        db,
    )
    kinds = {r["kind"]: r["n"] for r in rows(db, "SELECT kind, COUNT(*) AS n FROM items GROUP BY kind")}
    assert kinds == {"reference": 6 * 3, "systems": 6 * 3}  # 3 systems: 3 pairs per prompt
    with pytest.raises(HyperfitError, match="choose from"):
        build_study(
            StudyConfig(sources=[str(study_fit_run)], lengths=[24], systems=["nope/greedy"]),
            tmp_path / "x.db",
        )
    assert not (tmp_path / "x.db").exists()


def test_items_from_an_eval_directory_with_a_domain(study_eval_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    assert create("--from", f"fiction={study_eval_run}", "--lengths", "8,16", "--out", db) == 0, (
        capsys.readouterr().err
    )
    texts = rows(db, "SELECT DISTINCT system FROM texts")
    assert {t["system"] for t in texts} >= {"original/greedy", "hyperfitted/greedy", REFERENCE}
    assert {r["domain"] for r in rows(db, "SELECT domain FROM prompts")} == {"fiction"}
    records = read_jsonl(study_eval_run / "generations/decoding/original_greedy.jsonl")
    contexts = [r["context"] for r in rows(db, "SELECT context FROM prompts ORDER BY id")]
    assert contexts == [r["prompt"].strip() for r in records]
    # references of a prompts file are the reference text re-encoded, cut like the continuations
    reference = rows(
        db, "SELECT text FROM texts WHERE system = 'reference' AND length = 16 ORDER BY prompt_id"
    )
    assert all(records[k]["reference"].strip().startswith(r["text"]) for k, r in enumerate(reference))


# ------------------------------------------------------------------------------------------------------------
# Bad input: one sentence, nothing lost
# ------------------------------------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_directory_without_generations_is_refused(study_fit_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create("--from", empty, "--lengths", "12", "--out", tmp_path / "a.db") == 2
    assert "no summary.json" in one_error_line(capsys)
    no_decodes = tmp_path / "no-decodes"
    no_decodes.mkdir()
    write_json(no_decodes / "summary.json", {"modality": "text", "decoding": {}})
    assert create("--from", no_decodes, "--lengths", "12", "--out", tmp_path / "b.db") == 2
    assert "no decoded continuations" in one_error_line(capsys)
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists()


def test_a_length_longer_than_generated_is_refused(study_fit_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    assert create("--from", study_fit_run, "--lengths", "12,25", "--out", db) == 2
    err = one_error_line(capsys)
    assert "--lengths 25 is longer than the 24 tokens generated" in err
    assert not db.exists()


def test_an_existing_study_is_never_replaced_silently(study_fit_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    assert create("--from", study_fit_run, "--lengths", "12", "--out", db) == 0
    conn = store.connect(db)
    store.add_annotators(conn, 2)
    conn.close()
    capsys.readouterr()
    assert create("--from", study_fit_run, "--lengths", "12", "--out", db) == 2
    assert "already exists" in one_error_line(capsys)
    assert len(rows(db, "SELECT * FROM annotators")) == 2


def test_a_database_of_another_schema_version_is_refused(study_fit_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[12]), db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    for command in (["report", db, "--out", tmp_path / "r"], ["annotators", db, "--add", "1"], ["serve", db]):
        assert hyperfit(["study", *map(str, command)]) == 2
        err = one_error_line(capsys)
        assert "schema version 99" in err and "reads schema version 1" in err
    assert db.read_bytes() == before
    assert not (tmp_path / "r").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert hyperfit(["study", "report", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "not a hyperfit study database" in one_error_line(capsys)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    assert hyperfit(["study", "annotators", str(junk)]) == 2
    assert "not an SQLite database" in one_error_line(capsys)


def test_a_report_before_any_vote_says_so(study_fit_run, tmp_path, capsys):
    db = tmp_path / "study.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[12]), db)
    assert hyperfit(["study", "report", str(db), "--out", str(tmp_path / "r")]) == 2
    assert "has no votes yet" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()

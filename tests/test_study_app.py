"""The annotation server on a real study database: blinding, durable idempotent votes, resuming, sides,
attention checks, quotas, and security (tokens, other annotators' items, the admin page, escaping)."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter

import pytest
from starlette.testclient import TestClient

from hyperfit.study import store
from hyperfit.study.app import build_app
from hyperfit.study.items import StudyConfig, build_study

JSON = {"Accept": "application/json"}


@pytest.fixture()
def study(study_fit_run, tmp_path):
    """A study of the tiny run (6 prompts × 4 systems × 2 lengths, 2 annotations, a quarter checks) with three
    annotators, and a client for its server."""
    db = tmp_path / "study.db"
    build_study(
        StudyConfig(
            sources=[str(study_fit_run)], lengths=[12, 24], annotations=2, check_share=0.25, check_items=4
        ),
        db,
    )
    conn = store.connect(db)
    tokens = [token for _, token in store.add_annotators(conn, 3)]
    admin = store.new_admin_token(conn)
    conn.close()
    with TestClient(build_app(db), follow_redirects=False) as client:
        yield {"db": db, "tokens": tokens, "admin": admin, "client": client}


def count(db, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def current(client, token) -> dict:
    response = client.get(f"/a/{token}/item", headers=JSON)
    assert response.status_code == 200
    return response.json()["item"]


def vote_json(client, token, assignment, choice="left", submission_id=None):
    body = {
        "assignment": assignment,
        "choice": choice,
        "submission_id": submission_id or f"s-{assignment}-{choice}",
    }
    return client.post(f"/a/{token}/vote", json=body)


def test_the_page_shows_a_blinded_comparison_and_a_form_vote_is_stored(study):
    client, db, token = study["client"], study["db"], study["tokens"][0]
    page = client.get(f"/a/{token}")
    assert page.status_code == 200 and "Which continuation is better?" in page.text and "1" in page.text
    html = client.get(f"/a/{token}/item").text
    for name in ("hyperfitted", "original", "greedy", "top_p", "reference"):
        assert name not in html  # no system name reaches the page
    assignment = int(re.search(r'name="assignment" value="(\d+)"', html).group(1))
    response = client.post(
        f"/a/{token}/vote",
        data={"assignment": assignment, "choice": "right", "submission_id": "abc", "client_ms": "4200"},
    )
    assert response.status_code == 303 and response.headers["location"] == f"/a/{token}/item"
    [vote] = store.vote_rows(store.connect(db))
    assert vote["choice"] == "right" and vote["client_ms"] == 4200 and vote["server_ms"] >= 0
    sides = {vote["left_system"], vote["right_system"]}
    assert sides == {vote["system_a"], vote["system_b"]}
    assert vote["winner"] == ("a" if vote["right_system"] == vote["system_a"] else "b")


def test_a_vote_is_saved_once_whatever_is_replayed(study):
    client, db, token = study["client"], study["db"], study["tokens"][0]
    item = current(client, token)
    first = vote_json(client, token, item["assignment"], "left", "same-id")
    assert first.status_code == 200 and first.json() == {
        "assignment": item["assignment"],
        "choice": "left",
        "submission_id": "same-id",
        "replayed": False,
    }
    # the same request again (a double click, a resubmitted form, a retried request)
    again = vote_json(client, token, item["assignment"], "left", "same-id")
    assert again.json()["replayed"] is True
    # a different submission for the same item does not change or add a vote
    other = vote_json(client, token, item["assignment"], "right", "another-id")
    assert other.json() == {**first.json(), "replayed": True}
    form = client.post(
        f"/a/{token}/vote", data={"assignment": item["assignment"], "choice": "equal", "submission_id": "x"}
    )
    assert form.status_code == 303
    assert count(db, "votes") == 1
    assert store.vote_rows(store.connect(db))[0]["choice"] == "left"


def test_continue_later_resumes_exactly_where_the_annotator_stopped(study):
    client, token = study["client"], study["tokens"][1]
    first = current(client, token)
    assert current(client, token) == first  # reloading shows the same item, not a new one
    assert "saved" in client.get(f"/a/{token}/later").text
    assert current(client, token) == first
    vote_json(client, token, first["assignment"])
    second = current(client, token)
    assert second["assignment"] != first["assignment"] and second["position"] == first["position"] + 1


def test_sides_are_a_recorded_coin_per_item_and_annotator(study):
    client, db, tokens = study["client"], study["db"], study["tokens"]
    for token in tokens:
        for _ in range(10):
            vote_json(client, token, current(client, token)["assignment"])
    conn = store.connect(db)
    seed = store.get_setting(conn, "seed")
    assignments = conn.execute("SELECT annotator_id, item_id, left_side FROM assignments").fetchall()
    assert all(a["left_side"] == store.left_side(seed, a["annotator_id"], a["item_id"]) for a in assignments)
    sides = Counter(a["left_side"] for a in assignments)
    assert sides["a"] > 5 and sides["b"] > 5


def test_every_comparison_gets_its_annotations_and_checks_are_interleaved(study):
    client, db, tokens = study["client"], study["db"], study["tokens"]
    served = {token: 0 for token in tokens}
    active = list(tokens)
    while active:  # three annotators take turns until nothing is left for anyone
        for token in list(active):
            item = current(client, token)
            if item is None:
                active.remove(token)
                continue
            assert vote_json(client, token, item["assignment"]).status_code == 200
            served[token] += 1
    votes = store.vote_rows(store.connect(db))
    per_item = Counter(v["item_id"] for v in votes if v["kind"] != "check")
    assert len(per_item) == 48 and set(per_item.values()) == {2}  # every comparison exactly twice
    assert len({(v["annotator"], v["item_id"]) for v in votes}) == len(votes)
    for token in tokens:
        annotator = store.annotator_for_token(store.connect(db), token)
        mine = [v for v in votes if v["annotator_id"] == annotator["id"]]
        checks = sum(v["kind"] == "check" for v in mine)
        assert 0.1 <= checks / len(mine) <= 0.4  # about a quarter, capped by the 4 distinct checks
    assert "every comparison" in client.get(f"/a/{tokens[0]}/item").text


def test_per_annotator_cap(study_fit_run, tmp_path):
    db = tmp_path / "capped.db"
    build_study(StudyConfig(sources=[str(study_fit_run)], lengths=[12], per_annotator=5, check_share=0), db)
    conn = store.connect(db)
    [(_, token)] = store.add_annotators(conn, 1)
    with TestClient(build_app(db)) as client:
        for _ in range(5):
            vote_json(client, token, current(client, token)["assignment"])
        assert current(client, token) is None
    assert count(db, "votes") == 5


# ------------------------------------------------------------------------------------------------------------
# Security
# ------------------------------------------------------------------------------------------------------------


def test_no_or_wrong_token_gets_403_and_writes_nothing(study):
    client, db, token = study["client"], study["db"], study["tokens"][0]
    item = current(client, token)
    before = {t: count(db, t) for t in ("votes", "assignments", "annotators")}
    wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for path in (f"/a/{wrong}", f"/a/{wrong}/item", f"/a/{wrong}/later", "/a/x/item"):
        assert client.get(path).status_code == 403
        assert client.get(path, headers=JSON).status_code == 403
    assert vote_json(client, wrong, item["assignment"]).status_code == 403
    assert (
        client.post(
            f"/a/{wrong}/vote",
            data={"assignment": item["assignment"], "choice": "left", "submission_id": "z"},
        ).status_code
        == 403
    )
    assert client.get("/a//item").status_code in (403, 404)
    assert {t: count(db, t) for t in before} == before


def test_an_annotator_cannot_see_or_vote_on_another_annotators_items(study):
    client, db = study["client"], study["db"]
    alice, bob = study["tokens"][:2]
    theirs = current(client, alice)
    mine = current(client, bob)
    assert mine["assignment"] != theirs["assignment"]
    before = count(db, "votes")
    response = vote_json(client, bob, theirs["assignment"], "right", "bob-steals")
    assert response.status_code == 403 and "not given to you" in response.json()["error"]
    assert (
        vote_json(client, bob, 10_000, "right", "never-served").status_code == 403
    )  # never served to anyone
    assert count(db, "votes") == before
    assert current(client, alice) == theirs  # Alice's item is still hers and unvoted


def test_bad_votes_are_refused_without_writing(study):
    client, db, token = study["client"], study["db"], study["tokens"][0]
    item = current(client, token)
    assert (
        client.post(
            f"/a/{token}/vote",
            json={"assignment": item["assignment"], "choice": "maybe", "submission_id": "q"},
        ).status_code
        == 400
    )
    assert client.post(f"/a/{token}/vote", json={"choice": "left"}).status_code == 400
    assert (
        client.post(
            f"/a/{token}/vote", data={"assignment": "x", "choice": "left", "submission_id": "q"}
        ).status_code
        == 400
    )
    assert count(db, "votes") == 0


def test_admin_pages_need_the_admin_token(study):
    client, admin, token = study["client"], study["admin"], study["tokens"][0]
    vote_json(client, token, current(client, token)["assignment"])
    for bad in (token, "x" * 32, admin[:-1]):
        assert client.get(f"/admin/{bad}").status_code == 403
        assert client.get(f"/admin/{bad}/votes.csv").status_code == 403
    page = client.get(f"/admin/{admin}")
    assert page.status_code == 200 and "annotator-1" in page.text and "check accuracy" in page.text
    download = client.get(f"/admin/{admin}/votes.csv")
    assert download.status_code == 200 and download.text.count("\n") == 2  # header and the one vote
    assert "left_system" in download.text.splitlines()[0]
    conn = store.connect(study["db"])
    assert store.get_setting(conn, "admin_token_sha256") == store.hash_token(admin)
    assert admin not in (study["db"]).read_bytes().decode("latin-1")  # only its hash is stored
    assert not any(t in study["db"].read_bytes().decode("latin-1") for t in study["tokens"])


def test_model_text_with_html_is_shown_as_text(study):
    client, db, token = study["client"], study["db"], study["tokens"][0]
    payload = '<script>alert("x")</script><b onmouseover="alert(1)">bold</b> & more'
    conn = sqlite3.connect(db)
    conn.execute("UPDATE texts SET text = ? || text", (payload,))
    conn.execute("UPDATE prompts SET context = ? || context", (payload,))
    conn.commit()
    conn.close()
    response = client.get(f"/a/{token}/item")
    html = response.text
    assert "<script>alert" not in html and "<b onmouseover" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 3  # context, left, right
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"

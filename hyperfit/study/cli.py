"""``hyperfit study create | annotators | serve | report | simulate | export | import``: a human preference study
from fit-text / eval outputs to its report. Every subcommand turns bad input into one ``error:`` line (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from hyperfit.common.runs import HyperfitError

USAGE = """usage: hyperfit study COMMAND ...

commands:
  create      --from RUN_OR_EVAL_DIR ... --lengths 128,256 --annotations 3 --out STUDY.db: the comparisons
  annotators  STUDY.db --add N: one private link per new annotator (--admin: a new admin link)
  serve       STUDY.db [--port 8000]: the annotation pages, on 127.0.0.1 unless --public
  report      STUDY.db --out DIR: report.json, report.md, report.html, votes.csv
  simulate    STUDY.db --annotators 30 --seed 0: synthetic annotators with a known truth, over HTTP
  export      STUDY.db --format labelstudio|csv --out FILE: tasks for Label Studio or a crowd platform
  import      STUDY.db --format labelstudio|csv FILE: their results, into the same database

`hyperfit study COMMAND --help` lists a command's options."""


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of whole numbers") from None


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _help(name: str) -> str:
    from hyperfit.study.items import StudyConfig

    return next(f.metadata["help"] for f in dataclasses.fields(StudyConfig) if f.name == name)


def _link(base: str, token: str, *, admin: bool = False) -> str:
    return f"{base.rstrip('/')}/{'admin' if admin else 'a'}/{token}"


def create(argv: list[str]) -> int:
    from hyperfit.study import store
    from hyperfit.study.items import StudyConfig, build_study

    parser = argparse.ArgumentParser(prog="hyperfit study create")
    parser.add_argument(
        "--from", dest="sources", action="append", default=[], metavar="DIR", help=_help("sources")
    )
    parser.add_argument("--lengths", type=_ints, default=[128, 256], help=_help("lengths") + " Comma list.")
    parser.add_argument("--annotations", type=int, default=3, help=_help("annotations"))
    parser.add_argument("--pairs", default="reference", help=_help("pairs"))
    parser.add_argument("--systems", type=_names, default=[], help=_help("systems") + " Comma list.")
    parser.add_argument("--checks", dest="check_share", type=float, default=0.1, help=_help("check_share"))
    parser.add_argument("--check_items", type=int, default=12, help=_help("check_items"))
    parser.add_argument("--per_annotator", type=int, default=0, help=_help("per_annotator"))
    parser.add_argument("--stale_minutes", type=float, default=60.0, help=_help("stale_minutes"))
    parser.add_argument("--seed", type=int, default=0, help=_help("seed"))
    parser.add_argument("--tokenizer", default=None, help=_help("tokenizer"))
    parser.add_argument("--instructions", default=None, help=_help("instructions"))
    parser.add_argument("--out", required=True, help="The study database file to create (e.g. study.db).")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an existing database (its votes are lost)."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL printed in the admin link.")
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("out", "overwrite", "url")}
    made = build_study(StudyConfig(**options), args.out, overwrite=args.overwrite)
    print(
        f"{args.out}: {made['items']} comparisons, {made['checks']} attention-check items "
        f"({made['real_checks']} from looping continuations)"
        + (
            f"; {made['skipped_prompt_lengths']} prompt × length pairs skipped (human text too short)"
            if made["skipped_prompt_lengths"]
            else ""
        )
    )
    conn = store.connect(args.out)
    token = store.new_admin_token(conn)
    conn.close()
    print(f"admin page (keep it private; it is shown only now): {_link(args.url, token, admin=True)}")
    print(f"next: hyperfit study annotators {args.out} --add N, then hyperfit study serve {args.out}")
    return 0


def annotators(argv: list[str]) -> int:
    from hyperfit.study import store

    parser = argparse.ArgumentParser(prog="hyperfit study annotators")
    parser.add_argument("db", help="The study database.")
    parser.add_argument(
        "--add", type=int, default=0, help="Create this many annotators and print their links."
    )
    parser.add_argument(
        "--admin", action="store_true", help="Issue a new admin link (the old one stops working)."
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="Base URL of the server, for the links."
    )
    args = parser.parse_args(argv)
    conn = store.connect(args.db)
    if args.add < 0:
        raise HyperfitError("--add must be a positive number of annotators.")
    for annotator_id, token in store.add_annotators(conn, args.add):
        print(f"annotator-{annotator_id}\t{_link(args.url, token)}")
    if args.admin:
        print(f"admin\t{_link(args.url, store.new_admin_token(conn), admin=True)}")
    if not args.add and not args.admin:
        for row in store.annotator_progress(conn):
            checks = f"{row['checks_passed']}/{row['checks']} checks" if row["checks"] else "no checks"
            print(f"{row['label']}\t{row['source']}\t{row['votes']} votes\t{checks}")
    conn.close()
    return 0


def serve(argv: list[str]) -> int:
    from hyperfit.study.server import serve as run_server

    parser = argparse.ArgumentParser(prog="hyperfit study serve")
    parser.add_argument("db", help="The study database.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (other than 127.0.0.1 needs --public)."
    )
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    parser.add_argument(
        "--public", action="store_true", help="Listen on --host (default 0.0.0.0) beyond this machine."
    )
    args = parser.parse_args(argv)
    host = "0.0.0.0" if args.public and args.host == "127.0.0.1" else args.host
    run_server(args.db, host=host, port=args.port, public=args.public)
    return 0


def report(argv: list[str]) -> int:
    from hyperfit.study.report import write_study_report

    parser = argparse.ArgumentParser(prog="hyperfit study report")
    parser.add_argument("db", help="The study database.")
    parser.add_argument(
        "--out", required=True, help="Directory for report.json, report.md, report.html, votes.csv."
    )
    parser.add_argument(
        "--min_check_accuracy",
        type=float,
        default=0.75,
        help="Annotators below this attention-check accuracy are left out of the 'passing checks' results.",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="Bootstrap resamples per interval.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap.")
    args = parser.parse_args(argv)
    path = write_study_report(
        args.db,
        args.out,
        min_check_accuracy=args.min_check_accuracy,
        n_resamples=args.bootstrap,
        seed=args.seed,
    )
    print(f"report: {path}")
    return 0


def simulate(argv: list[str]) -> int:
    from hyperfit.study import store
    from hyperfit.study.simulate import parse_truth
    from hyperfit.study.simulate import simulate as run_simulation

    parser = argparse.ArgumentParser(prog="hyperfit study simulate")
    parser.add_argument("db", help="The study database.")
    parser.add_argument("--annotators", type=int, default=30, help="Simulated annotators to add.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the truth, the annotators and their choices."
    )
    parser.add_argument(
        "--truth",
        default="",
        help="SYSTEM=THETA,... log-strengths against the human text (0); the rest from the seed.",
    )
    parser.add_argument(
        "--noise", type=float, default=0.1, help="Chance a careful annotator answers at random."
    )
    parser.add_argument(
        "--spammers", type=float, default=0.1, help="Share of annotators who always answer at random."
    )
    parser.add_argument("--concurrency", type=int, default=8, help="Annotators voting at the same time.")
    parser.add_argument(
        "--url", default=None, help="A running server's base URL (default: start one on 127.0.0.1)."
    )
    args = parser.parse_args(argv)
    conn = store.connect(args.db)
    systems = store.get_setting(conn, "systems")
    conn.close()
    truth = parse_truth(args.truth, systems, seed=args.seed, noise=args.noise, spammers=args.spammers)
    done = run_simulation(
        args.db, annotators=args.annotators, truth=truth, base_url=args.url, concurrency=args.concurrency
    )
    print(
        f"{done['votes']} votes from {done['annotators']} simulated annotators ({done['spammers']} spammers) in "
        f"{done['seconds']:.1f} s; request latency p50 {done['latency_p50_ms']:.1f} ms, p99 {done['latency_p99_ms']:.1f} ms"
    )
    print(
        "truth (log-strength against the human text): "
        + ", ".join(f"{s}={t:+.2f}" for s, t in truth.theta.items())
    )
    return 0


def export(argv: list[str]) -> int:
    from hyperfit.study.exchange import export_study

    parser = argparse.ArgumentParser(prog="hyperfit study export")
    parser.add_argument("db", help="The study database.")
    parser.add_argument(
        "--format",
        choices=("labelstudio", "csv"),
        required=True,
        help="labelstudio: tasks JSON + labeling config; csv: one row per comparison.",
    )
    parser.add_argument(
        "--out", required=True, help="The file to write (the Label Studio config goes beside it)."
    )
    args = parser.parse_args(argv)
    made = export_study(args.db, args.out, fmt=args.format)
    print(
        f"{args.out}: {made['tasks']} tasks"
        + (f"; labeling config {made['config']}" if made.get("config") else "")
    )
    return 0


def import_(argv: list[str]) -> int:
    from hyperfit.study.exchange import import_results

    parser = argparse.ArgumentParser(prog="hyperfit study import")
    parser.add_argument("db", help="The study database.")
    parser.add_argument("file", help="The platform's results: a Label Studio JSON export or a CSV.")
    parser.add_argument(
        "--format", choices=("labelstudio", "csv"), required=True, help="Which platform wrote the file."
    )
    args = parser.parse_args(argv)
    made = import_results(args.db, args.file, fmt=args.format)
    print(
        f"{made['added']} votes added from {made['annotators']} annotators ({made['already']} already there)"
    )
    return 0


COMMANDS = {
    "create": create,
    "annotators": annotators,
    "serve": serve,
    "report": report,
    "simulate": simulate,
    "export": export,
    "import": import_,
}


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(
            f"error: unknown study command {argv[0]!r}; run `hyperfit study --help` for the list.",
            file=sys.stderr,
        )
        return 2
    try:
        return command(argv[1:])
    except HyperfitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

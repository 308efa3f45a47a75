"""The reproduction's report: the claims table first, then the decodings table (all domains and the domains not
trained on), per-domain TTR, TTR against position, the tuning record, the deep-tail histogram, sharpness, images
and one sample per domain chosen by a stated rule. Built from ``summary.json`` alone.
"""

from __future__ import annotations

from hyperfit.common.report import Cell, Plot, Report, Sample, Samples, Section, Series, Table, Text
from hyperfit.common.runs import read_jsonl
from hyperfit.reproduce.figures import LABELS

DECODING_COLUMNS = (
    "ttr_96",
    "ttr_all",
    "rep_4",
    "loop_share",
    "copy_gt10_share",
    "dataset_bleu",
    "word_ttr_96",
)
ORDER = ("human", "original", "larger", "hyperfitted")


def _cell(figures: dict, key: str, fmt: str = "{:.3f}") -> Cell | None:
    if key not in figures:
        return None
    ci = figures.get(f"{key}_ci")
    return Cell(figures[key], ci=tuple(ci) if ci else None, fmt=fmt)


def _sorted(keys) -> list[str]:
    return sorted(keys, key=lambda k: (ORDER.index(k.split("/")[0]) if k.split("/")[0] in ORDER else 9, k))


def claims_section(table: dict) -> Section:
    rows = []
    for c in table["claims"]:
        value = Cell(c["value"], ci=tuple(c["ci"]) if c["ci"] and c["value"] is not None else None)
        rows.append(
            [c["statement"], c["source"], c["figure"], value, c["rule_text"], c["verdict"].upper(), c["note"]]
        )
    counts = ", ".join(f"{n} {v}" for v, n in table["counts"].items())
    return Section(
        "Claims",
        [
            Text(
                f"Every claim with the figure measured for it at this scale, its 95 % interval and the rule that "
                f"decides the verdict ({counts}). The paper's headline measure is human preference; "
                "`hyperfit study create` on this directory builds that study (references are 256 tokens)."
            ),
            Table(["claim", "source", "figure", "measured [95 % CI]", "rule", "verdict", "note"], rows),
        ],
    )


def decodings_section(text: dict) -> Section:
    blocks = []
    for scope, title in (("all", "all test domains"), ("not_trained_on", "domains not trained on")):
        rows = []
        for key in _sorted(text["figures"]):
            figures = text["figures"][key].get(scope)
            if figures is None:
                continue
            rows.append([key, *(_cell(figures, c) for c in DECODING_COLUMNS)])
        if rows:
            blocks.append(
                Table(
                    ["decoding", *(LABELS[c] for c in DECODING_COLUMNS)],
                    rows,
                    caption=f"Test prompts, {title} ({', '.join(text['not_trained_on']) if scope != 'all' else ', '.join(text['domains'])}; "
                    f"{text['n_test_per_domain']} each), {text['fit']['n_eval'] and ''}mean over domains, 95 % "
                    "intervals over prompts stratified by domain. The larger model has another tokenizer: only its "
                    "word figures compare.",
                )
            )
    domains = text["domains"]
    rows = [
        [key, *(_cell(text["figures"][key]["domains"][d], "ttr_96") for d in domains)]
        for key in _sorted(text["figures"])
    ]
    blocks.append(
        Table(["decoding", *domains], rows, caption="TTR of the first 96 generated ids per domain.")
    )
    diffs = text["differences"]
    rows = []
    for name in _sorted(diffs):
        for scope in ("all", "not_trained_on"):
            d = diffs[name].get(scope, {}).get("ttr_96") or diffs[name].get(scope, {}).get("word_ttr_96")
            if d:
                rows.append([name, scope.replace("_", " "), Cell(d["diff"], ci=tuple(d["ci"])), _p(d["p"])])
    blocks.append(
        Table(
            ["difference", "domains", "TTR (first 96; word TTR for another tokenizer)", "p"],
            rows,
            caption="Paired over the same test prompts (sign-flip / swap permutation p).",
        )
    )
    return Section("Decodings", blocks)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def curves_section(text: dict) -> Section:
    series = [
        Series(key, curve["position"], curve["mean"])
        for key, curve in text["sliding_ttr"].items()
        if curve["position"] and key.split("/")[1] in ("greedy", "top_p", "reference", "greedy_blocked")
    ]
    return Section(
        "TTR against position",
        [
            Plot(
                "TTR of the last 96 ids against position (appendix Fig. 9)",
                series,
                x_label="generated ids",
                y_label="TTR of the last 96 ids",
            )
        ],
    )


def tuning_section(text: dict, rule: str) -> Section:
    rows = []
    for name, record in text["tuning"].items():
        for i, trial in enumerate(record["trials"]):
            settings = ", ".join(f"{k} {v:g}" for k, v in trial["settings"].items())
            rows.append(
                [
                    name,
                    i + 1,
                    settings,
                    trial["ttr"],
                    trial["rep_4"],
                    "chosen" if i == record["chosen"] else "",
                ]
            )
    reference = next(iter(text["tuning"].values()))["reference"] if text["tuning"] else {}
    return Section(
        "Tuning (development prompts)",
        [
            Text(
                f"Each family had the same number of trials on {text['n_dev_per_domain']} development prompts per "
                f"domain, disjoint from the test prompts. Rule: {rule}. Human references on these prompts: TTR "
                f"{reference.get('ttr', float('nan')):.3f}, rep-4 {reference.get('rep_4', float('nan')):.3f}."
            ),
            Table(["family", "trial", "settings", "TTR (all ids)", "rep-4", ""], rows),
        ],
    )


def tail_section(tail: dict | None) -> Section | None:
    if not tail:
        return None
    plot = Plot(
        "The original model's rank of the hyperfitted greedy picks",
        [
            Series(
                "share of picks",
                tail["bins"],
                tail["share"],
                [c[0] for c in tail["share_ci"]],
                [c[1] for c in tail["share_ci"]],
            )
        ],
        kind="bar",
        x_label="rank under the original model",
        y_label="share of picks",
    )
    return Section(
        "Deep-tail promotion (Li et al. 2026)",
        [
            Text(
                f"Over {tail['n_prompts']} test prompts, the share of tokens the hyperfitted greedy decode picked that "
                f"the original model ranks beyond 10 on the same context: {tail['beyond_10']:.3f} "
                f"[{tail['beyond_10_ci'][0]:.3f}, {tail['beyond_10_ci'][1]:.3f}]."
            ),
            plot,
        ],
    )


def sharpness_section(fit: dict) -> Section:
    rows = []
    for key, label, fmt in (
        ("entropy", "held-out entropy (nats)", "{:.3f}"),
        ("top1_prob", "held-out top-1 probability", "{:.3f}"),
        ("perplexity", "held-out perplexity", "{:.1f}"),
    ):
        d = fit["differences"]["after_minus_before"].get(key)
        rows.append(
            [
                label,
                _cell(fit["before"], key, fmt),
                _cell(fit["after"], key, fmt),
                Cell(d["diff"], ci=tuple(d["ci"]), fmt=fmt) if d else None,
            ]
        )
    losses = fit.get("epoch_losses") or []
    return Section(
        "Sharpness and perplexity (teacher-forced, all held-out texts)",
        [
            Table(["figure", "original", "hyperfitted", "after − before"], rows),
            Text(
                f"Training: {fit['n_train']} blocks × {fit['block_len']} tokens; last epoch's train loss "
                f"{losses[-1]:.3f}."
                if losses
                else "Training loss not recorded."
            ),
        ],
    )


def image_section(image: dict | None) -> Section | None:
    if not image:
        return None
    rows = []
    for key, label in (
        ("stripe_score", "rows equal to the row above"),
        ("ttr", "TTR of the completed codes"),
    ):
        d = image["differences"].get("after_minus_before", {}).get(key)
        rows.append(
            [
                label,
                _cell(image["before"], key),
                _cell(image["after"], key),
                Cell(d["diff"], ci=tuple(d["ci"])) if d else None,
            ]
        )
    return Section(
        "Images (§7.1)",
        [
            Table(["figure", "original prior", "hyperfitted prior", "after − before"], rows),
            Text("The full image report with grids: [image/report.html](image/report.html)."),
        ],
    )


def samples_section(out, text: dict) -> Section:
    """Per domain, the prompt whose hyperfitted greedy TTR is the domain's median (rule stated in the caption)."""
    from pathlib import Path

    decodes = {
        p.parent.name + "/" + p.stem: read_jsonl(p) for p in sorted(Path(out, "decodes").glob("*/*.jsonl"))
    }
    shown = [k for k in ("original/greedy", "original/top_p", "hyperfitted/greedy") if k in decodes]
    hyper = decodes.get("hyperfitted/greedy", [])
    items = []
    for domain in text["domains"]:
        rows = [i for i, r in enumerate(hyper) if r["domain"] == domain]
        if not rows:
            continue
        from hyperfit.common.analysis import ttr

        rows.sort(key=lambda i: ttr(hyper[i]["ids"][:96], window=None))
        i = rows[len(rows) // 2]
        columns = {}
        for k in shown:
            ids = decodes[k][i]["ids"]
            columns[f"{k} (TTR {ttr(ids[:96], window=None):.2f})"] = decodes[k][i]["text"]
        items.append(Sample(f"{domain}, test prompt {i + 1}", columns))
    return Section(
        "Samples",
        [
            Samples(
                items,
                caption="Per domain, the test prompt at the median of the hyperfitted greedy TTR (first 96 "
                "ids); words inside a repeated 4-word sequence are marked.",
            )
        ],
    )


def reproduce_report(summary: dict, cfg) -> Report:
    from hyperfit.common.tuning import SELECTION_RULE

    text = summary["text"]
    machine = summary.get("machine", {})
    sections = [
        claims_section(summary["claims"]),
        decodings_section(text),
        curves_section(text),
        tuning_section(text, SELECTION_RULE),
        tail_section(text.get("tail")),
        sharpness_section(text["fit"]),
        image_section(summary.get("image")),
        samples_section(cfg.out, text),
    ]
    return Report(
        f"Reproduction at {cfg.scale} scale",
        [s for s in sections if s is not None],
        subtitle=(
            f"{cfg.model} hyperfitted on {cfg.data} ({cfg.n_train} × {cfg.block_len} tokens, {cfg.epochs} epochs, lr "
            f"{cfg.lr:g}); test domains {', '.join(text['domains'])} (not trained on: {', '.join(text['not_trained_on'])}); "
            f"{cfg.max_new_tokens} new tokens; machine: {machine.get('device', '?')}; "
            f"{summary['wall_seconds'] / 60:.1f} min"
        ),
    )

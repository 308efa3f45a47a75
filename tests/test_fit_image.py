"""The image side end to end: a tiny prior pretrained from real scikit-image patches, hyperfitted by the shared
trainer; start-of-sequence and position handling, completions that keep their context, the image metrics,
the run directory, two processes under `accelerate launch`, and one clear sentence for each bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfit.cli import main as hyperfit
from hyperfit.common.batch import IGNORE_INDEX, count_label_tokens, make_batch
from hyperfit.common.blocker import CitationBlocker
from hyperfit.common.report import render
from hyperfit.common.runs import HyperfitError, read_json, write_json
from hyperfit.image.metrics import (
    STANDARD_FID,
    completed_mask,
    completion_mse,
    fid_extractor,
    fid_kid,
    frechet_distance,
    kernel_distance,
    longest_runs,
    nearest_distance,
    pairwise_distance,
    psnr,
    stripe_score,
    timm_extractor,
)
from hyperfit.image.model import (
    PriorConfig,
    build_prior,
    complete,
    encode_for_model,
    load_prior,
    model_block_len,
    sos_id,
)
from hyperfit.image.report import fit_report
from hyperfit.image.tokenizers import PaletteTokenizer
from hyperfit.recipes.compare import write_comparison
from tests.conftest import launch_failure, launch_two_processes

ROOT = Path(__file__).resolve().parents[1]

# A prior small enough for seconds: 3 photographs at 64x64, 8x8 patches (64 tokens), a palette of 8 colours, 2
# layers of 32, with dropout (pretrained with it, so that hyperfitting has a dropout to turn off).
PRETRAIN = [
    "pretrain-image",
    *("--photos", "astronaut,coffee,brick", "--resize", "64", "--patch", "8", "--per_image", "120"),
    *("--tokenizer", "palette", "--vocab", "8", "--layers", "2", "--width", "32", "--heads", "2"),
    *("--epochs", "1", "--n_pretrain_eval", "8", "--precision", "fp32", "--dropout", "0.1"),
]
FIT = [
    *("--n_train", "8", "--n_eval", "6", "--batch_size", "4", "--epochs", "2", "--eval_every_epochs", "1"),
    *("--precision", "fp32", "--grid_rows", "4", "--grid_scale", "2"),
]


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "prior"
    assert hyperfit([*PRETRAIN, "--out", str(path)]) == 0
    return path


def fit(prior: Path, out: Path, *extra: str) -> int:
    return hyperfit(["fit-image", "--prior", str(prior), "--out", str(out), *FIT, *extra])


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# --- start-of-sequence token and positions (the official code had neither SOS nor the right length) ------------------------------------------------


def test_sos_is_prepended_never_a_label_and_never_predicted() -> None:
    model = build_prior(8, 64, PriorConfig(layers=1, width=16, heads=2), seed=0)
    sos = sos_id(model)
    assert sos == 8 and model.config.vocab_size == 9 and model.config.n_positions == 65
    codes = torch.randint(0, 8, (3, 64))
    ids = encode_for_model(codes, sos=sos)
    assert ids.shape == (3, 65) and (ids[:, 0] == sos).all() and torch.equal(ids[:, 1:], codes)
    batch = make_batch(ids, ignore_first=1)
    assert (batch["labels"][:, 0] == IGNORE_INDEX).all()
    assert count_label_tokens(batch["labels"]) == 3 * 64  # every code is a target, SOS none
    assert model(input_ids=ids).logits.shape[-1] == 8  # the head has no SOS output
    with pytest.raises(ValueError, match="below the SOS id 8"):
        encode_for_model(torch.full((1, 4), 8), sos=sos)


def test_positions_are_never_overrun() -> None:
    seen: list[int] = []
    model = build_prior(8, 64, PriorConfig(layers=1, width=16, heads=2), seed=0).eval()
    model.transformer.wpe.register_forward_hook(lambda m, inputs, out: seen.append(int(inputs[0].max())))
    out = complete(model, torch.randint(0, 8, (2, 64)), n_context=16)
    assert out.codes.shape == (2, 64)  # exactly t codes, not t + 1 (the official max_length = 1025)
    assert max(seen) < model.config.n_positions
    assert model_block_len(model, 64) == 65
    # A public ImageGPT checkpoint has t positions for t codes: the block leaves out the last code...
    model.config.n_positions = 64
    assert model_block_len(model, 64) == 64
    # ... and fewer positions than codes is refused in one sentence.
    with pytest.raises(HyperfitError, match="the prior has 64 positions but an image is 100 codes"):
        model_block_len(model, 100)


def test_a_prior_with_exactly_t_positions_completes_every_code() -> None:
    """openai/imagegpt-* on 32x32 has 1,024 positions for SOS + 1,024 codes: the last code is generated but never
    fed back, so no forward may index position t (it used to, one step after the last token)."""
    model = build_prior(8, 63, PriorConfig(layers=1, width=16, heads=2), seed=0).eval()
    assert model.config.n_positions == 64
    seen: list[int] = []
    model.transformer.wpe.register_forward_hook(lambda m, inputs, out: seen.append(int(inputs[0].max())))
    out = complete(model, torch.randint(0, 8, (2, 64)), n_context=16)
    assert out.codes.shape == (2, 64) and max(seen) == 63


def test_a_completion_never_changes_its_context() -> None:
    model = build_prior(8, 64, PriorConfig(layers=2, width=16, heads=2), seed=1).eval()
    codes = torch.randint(0, 8, (4, 64), generator=torch.Generator().manual_seed(0))
    original = codes.clone()
    blocker = CitationBlocker(codes, n=3)
    runs = [
        complete(model, codes, n_context=16),
        complete(model, codes, n_context=16, temperature=1.0, generator=torch.Generator().manual_seed(0)),
        complete(model, codes, n_context=16, logits_processors=[blocker]),
    ]
    assert torch.equal(codes, original)
    for out in runs:
        assert out.codes.shape == (4, 64) and torch.equal(out.codes[:, :16], codes[:, :16])
        assert int(out.codes.max()) < 8 and out.entropy.shape == (4,)
    # Greedy completion is the argmax continuation, token for token (no cache, full recompute).
    ids = encode_for_model(codes[:, :16], sos=8)
    with torch.no_grad():
        for _ in range(48):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(ids[:, 1:], runs[0].codes)


# --- image metrics against hand-built answers --------------------------------------------------------------------


def test_stripe_score_and_runs() -> None:
    grid = (4, 4)
    stripes = torch.tensor([[1, 2, 3, 4] * 4])  # every row repeats the one above
    assert stripe_score(stripes, grid=grid, n_context=4) == 1.0
    fresh = torch.arange(16)[None]
    assert stripe_score(fresh, grid=grid, n_context=4) == 0.0
    half = torch.tensor(
        [[1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 0]]
    )  # rows 1, 2, 3: same, new, 3/4 same
    assert stripe_score(half, grid=grid, n_context=4) == pytest.approx(1 / 3)
    assert stripe_score(half, grid=grid, n_context=4, min_match=0.75) == pytest.approx(2 / 3)
    assert stripe_score(stripes, grid=grid, n_context=6) == 1.0  # row 1 is partly context: rows 2, 3 count
    runs = torch.tensor([[0, 0, 5, 5, 5, 1, 2, 2], [3, 3, 3, 3, 3, 3, 3, 3]])
    assert longest_runs(runs, n_context=2).tolist() == [3, 6]


def test_pixel_metrics() -> None:
    mask = completed_mask((2, 2), 1, (4, 4))
    assert mask.sum() == 12 and not mask[:2, :2].any()
    zeros, halves = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    mse = completion_mse(zeros, halves, mask)
    assert mse.tolist() == [0.25, 0.25]
    assert psnr(mse)[0].item() == pytest.approx(6.0206, abs=1e-3)
    assert psnr(torch.zeros(1))[0].item() == pytest.approx(100.0)
    train = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    copy = train[3:4].clone()
    copy[:, :, :2, :2] = 0  # only the context differs, so it is still a copy of the completed region
    distance, index = nearest_distance(copy, train, mask)
    assert distance.item() == pytest.approx(0.0, abs=1e-12) and index.item() == 3
    assert pairwise_distance(halves, mask) == 0.0
    assert pairwise_distance(torch.cat([zeros[:1], halves[:1]]), mask) == pytest.approx(0.5)


def test_fid_and_kid_with_an_injected_random_extractor() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 6, generator=g), torch.randn(200, 6, generator=g) * 1.5 + 0.3
    sa, sb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    mu = (a.mean(0) - b.mean(0)).numpy()
    reference = mu @ mu + np.trace(sa + sb - 2 * scipy_linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # KID over all samples (one subset of every image, so the order does not matter) against the formula.
    x, y, d = a[:50].double(), b[:50].double(), 6
    k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    off = 1 - torch.eye(50, dtype=torch.float64)
    expected = ((k(x, x) * off).sum() + (k(y, y) * off).sum()) / (50 * 49) - 2 * k(x, y).mean()
    assert kernel_distance(a[:50], b[:50], subsets=1, subset_size=50)[0] == pytest.approx(float(expected))
    same, _ = kernel_distance(a[:100], a[100:], subsets=3, subset_size=100)
    shifted, _ = kernel_distance(a[:100], b[:100], subsets=3, subset_size=100)
    assert shifted > 10 * abs(same)
    extractor = timm_extractor("test_resnet", pretrained=False, input_size=32)  # random weights, no download
    images = torch.rand(6, 3, 8, 8, generator=g)
    scores = fid_kid(images, images.flip(-1), extractor, subset_size=6)
    assert set(scores) == {"fid", "kid", "kid_std"} and np.isfinite(scores["fid"])


def test_standard_fid_without_its_weights_falls_back_to_timm_and_the_report_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-cache"))  # no standard FID weights in it
    extractor, about = fid_extractor(STANDARD_FID, pretrained=False)
    assert about["standard"] is False and about["extractor"] == "timm inception_v3 (random weights)"
    assert about["note"].startswith("The standard FID Inception weights are not available: ")
    assert "not with published FID" in about["note"]
    assert extractor(torch.rand(2, 3, 8, 8)).shape == (2, 2048)  # Inception's pooled features
    summary = read_json(ROOT / "tests/fixtures/reports/tiny-image/summary.json")
    markdown = render(fit_report(tmp_path, {**summary, "fid": about}))[0]
    assert about["note"] in markdown


# --- the recipes end to end ---------------------------------------------------------------------------------------


def test_pretraining_is_cached_and_reused(prior, capsys) -> None:
    for name in ("summary.json", "config.json", "manifest.json", "tokenizer.pt", "data.pt", "pools.pt"):
        assert (prior / name).exists(), name
    assert (prior / "model/model.safetensors").exists()
    manifest = read_json(prior / "manifest.json")
    # The three sets share no pixel: pretraining rows above the band, pools left / right inside it.
    assert manifest["counts"]["pretrain"] > 100 and min(manifest["counts"].values()) >= 8
    assert all(c["y"] >= 48 and c["x"] + 8 <= 32 for c in manifest["pool_crops"]["train_pool"])
    assert all(c["y"] >= 48 and c["x"] >= 32 for c in manifest["pool_crops"]["eval_pool"])
    model, tokenizer, _ = load_prior(str(prior))
    assert model.config.resid_pdrop == 0.1  # the prior keeps its dropout; hyperfitting turns it off
    assert tokenizer.vocab_size == 8 and model.config.vocab_size == 9

    before = (prior / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert hyperfit([*PRETRAIN, "--out", str(prior)]) == 0
    assert "reusing the pretrained prior" in capsys.readouterr().out
    assert (prior / "summary.json").stat().st_mtime_ns == before
    assert hyperfit([*PRETRAIN, "--out", str(prior), "--vocab", "6"]) == 2
    assert "holds a finished prior built with other settings (vocab); pass --overwrite" in last_error(capsys)
    assert (prior / "summary.json").stat().st_mtime_ns == before


def test_pretraining_over_two_seeds_gives_a_prior_each_and_their_mean_and_sd(tmp_path, capsys) -> None:
    out = tmp_path / "priors"
    small = [*PRETRAIN, "--per_image", "60", "--n_pretrain_eval", "4"]  # two priors: half the patches each
    assert hyperfit([*small, "--seeds", "0,1", "--out", str(out)]) == 0
    runs = {s: read_json(out / f"seed_{s}/summary.json") for s in (0, 1)}
    for s in (0, 1):
        assert read_json(out / f"seed_{s}/config.json")["seed"] == s
        # Each seed's prior is a prior like any other (fit-image --prior OUT/seed_<s>).
        _, tokenizer, _ = load_prior(str(out / f"seed_{s}"))
        assert tokenizer.vocab_size == 8
    # The seed changes the prior's initialisation and the patch order, not the patches or their tokenizer.
    manifests = [read_json(out / f"seed_{s}/manifest.json") for s in (0, 1)]
    assert manifests[0]["codes_sha256"] == manifests[1]["codes_sha256"]
    assert runs[0]["after"]["loss"] != runs[1]["after"]["loss"]
    summary = read_json(out / "summary.json")
    assert summary["kind"] == "seeds" and summary["command"] == "pretrain-image"
    for side in ("before", "after"):
        for name in ("loss", "entropy", "stripe_score", "longest_run"):
            values = [runs[s][side][name] for s in (0, 1)]
            assert summary["mean_sd"][side][name]["mean"] == pytest.approx(sum(values) / 2)
            assert summary["mean_sd"][side][name]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
            assert summary["per_seed"]["1"][side][name] == values[1]
    losses = [runs[s]["train"]["final_train_loss"] for s in (0, 1)]
    assert summary["mean_sd"]["train"]["final_train_loss"]["mean"] == pytest.approx(sum(losses) / 2)
    page = (out / "report.md").read_text()
    assert "Mean ± sd over 2 seeds" in page and "(seed_1/summary.json)" in page  # a prior has no report
    # Asked again with the same settings, the priors are reused; with other seeds, refused in one sentence.
    before = (out / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert hyperfit([*small, "--seeds", "0,1", "--out", str(out)]) == 0
    assert "reusing the 2 pretrained priors" in capsys.readouterr().out
    assert (out / "summary.json").stat().st_mtime_ns == before
    assert hyperfit([*small, "--seeds", "0,2", "--out", str(out)]) == 2
    assert "holds a finished prior built with other settings (seeds); pass --overwrite" in last_error(capsys)
    assert hyperfit([*small, "--out", str(out)]) == 2  # a plain prior is not a set of seeds
    assert "other settings (seeds)" in last_error(capsys)


def test_a_prior_cached_before_seeds_existed_is_still_reused(prior, tmp_path, capsys) -> None:
    """A config.json written before --seeds existed has no "seeds": it was built without it (the cached
    runs/cache/image-prior of an earlier `make demo`)."""
    old = tmp_path / "old-prior"
    shutil.copytree(prior, old)
    config = read_json(old / "config.json")
    del config["seeds"]
    write_json(old / "config.json", config)
    capsys.readouterr()
    assert hyperfit([*PRETRAIN, "--out", str(old)]) == 0
    assert "reusing the pretrained prior" in capsys.readouterr().out


def test_fit_image_main_writes_a_self_describing_run(prior, tmp_path) -> None:
    out = tmp_path / "fit"
    assert fit(prior, out) == 0
    for name in (
        "config.json",
        "manifest.json",
        "metrics.jsonl",
        "data.pt",
        "tokenizer.pt",
        "summary.json",
        "report.md",
        "report.html",
        "grid.png",
        "grids/epoch_000.png",
        "grids/epoch_002.png",
        "generations/epoch_002.jsonl",
        "generations/original_top_p.jsonl",
        "generations/hyperfitted_top_p.jsonl",
        "generations/hyperfitted_blocked.jsonl",
        "model/model.safetensors",
        "checkpoints/last/trainer_state.json",
    ):
        assert (out / name).exists(), name
    summary = read_json(out / "summary.json")
    assert summary["modality"] == "image" and summary["block_len"] == 65 and summary["n_context"] == 16
    for side in ("before", "after"):
        keys = {"ttr", "entropy", "top1_prob", "perplexity", "stripe_score", "nn_distance", "mse", "psnr"}
        assert keys <= set(summary[side])
    assert summary["before"]["epoch"] == 0 and summary["after"]["epoch"] == 2
    assert list(summary["columns"]) == [
        "original greedy",
        "original top-p",
        "hyperfitted greedy",
        "hyperfitted top-p",
        "hyperfitted + blocker",
        "held-out truth",
    ]
    # The hyperfitted prior sampled like the original (same strategy and seed), and the paired difference.
    sampled = summary["differences"]["hyperfitted_minus_original"]["top_p"]["ttr"]
    columns = summary["columns"]
    assert sampled["diff"] == pytest.approx(
        columns["hyperfitted top-p"]["ttr"] - columns["original top-p"]["ttr"]
    )
    assert summary["columns"]["held-out truth"]["mse"] == 0.0
    # Every headline figure with its 95 % interval over the held-out images, and after - before paired over them.
    changes = summary["differences"]["after_minus_before"]
    for name in ("ttr", "stripe_score", "nn_distance", "mse", "psnr", "entropy", "perplexity", "gen_entropy"):
        for side in ("before", "after"):
            low, high = summary[side][f"{name}_ci"]
            assert low - 1e-6 <= summary[side][name] <= high + 1e-6, (side, name)
        expected = summary["after"][name] - summary["before"][name]
        assert changes[name]["diff"] == pytest.approx(expected, rel=1e-5, abs=1e-6), name
        assert changes[name]["n"] == 6 and 0 <= changes[name]["p"] <= 1
    stripes = summary["differences"]["hyperfitted_greedy_minus_original"]["top_p"]["stripe_score"]
    expected = columns["hyperfitted greedy"]["stripe_score"] - columns["original top-p"]["stripe_score"]
    assert stripes["diff"] == pytest.approx(expected, abs=1e-6)
    assert summary["train"]["num_processes"] == 1 and summary["wall_seconds"] > 0
    assert read_json(out / "model/config.json")["resid_pdrop"] == 0.0  # dropout off while hyperfitting
    # Six columns of 8x8 tiles at scale 2 with 2-pixel padding, one row per shown held-out image.
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (6 * 18 + 2, 4 * 18 + 2 + 14)
    codes = [
        json.loads(line)["codes"] for line in (out / "generations/epoch_002.jsonl").read_text().splitlines()
    ]
    eval_codes = torch.load(out / "data.pt")["eval_codes"]
    assert torch.equal(torch.tensor(codes)[:, :16], eval_codes[:, :16])
    assert '<img src="grid.png"' in (out / "report.html").read_text()
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("eval") == 3 and kinds.count("epoch") == 2
    # The image run beside a text run in one table.
    text = tmp_path / "text"
    write_json(text / "summary.json", {"modality": "text", "before": {"ttr": 0.3}, "after": {"ttr": 0.6}})
    page = write_comparison([text, out], tmp_path).read_text()
    assert "text before" in page and "image after" in page and "fit/grid.png" in page
    # A finished run is never overwritten without being asked; --resume only re-reports it.
    assert fit(prior, out, "--resume") == 0
    assert read_json(out / "summary.json") == summary


def test_compare_shows_an_image_seeds_directory_as_mean_and_sd(prior, tmp_path) -> None:
    out = tmp_path / "seeds"
    assert fit(prior, out, "--seeds", "0,1", "--epochs", "1") == 0
    stripes = [read_json(out / f"seed_{s}/summary.json")["after"]["stripe_score"] for s in (0, 1)]
    page = write_comparison([out], tmp_path / "cmp").read_text()
    mean, sd = sum(stripes) / 2, abs(stripes[0] - stripes[1]) / 2**0.5
    assert "image (2 seeds) after" in page and f"{mean:.3f} ± {sd:.3f}" in page
    assert "seeds/seed_0/grid.png" in page and "image (2 seeds), seed 0" in page


def test_a_vqvae_prior_end_to_end(tmp_path) -> None:
    prior = tmp_path / "vq-prior"
    vq = ["--tokenizer", "vqvae", "--vocab", "16", "--vq_epochs", "1", "--out", str(prior)]
    assert hyperfit([*PRETRAIN, *vq]) == 0
    fid = ["--fid_model", "test_resnet", "--fid_pretrained", "false"]  # FID/KID through random features
    assert fit(prior, tmp_path / "fit", "--epochs", "1", *fid) == 0
    summary = read_json(tmp_path / "fit/summary.json")
    assert {"fid", "kid", "kid_std"} <= set(summary["columns"]["hyperfitted greedy"])
    # 8x8 patches, 2x2 pixels a token: 16 codes + SOS, a context of 4 codes (one token row).
    assert summary["block_len"] == 17 and summary["n_context"] == 4
    assert summary["tokenizer"] == "VQVAETokenizer(ids=16, grid=(4, 4))"


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "accelerate").exists(), reason="accelerate not installed"
)
def test_two_processes_under_accelerate_launch(prior, tmp_path) -> None:
    done = launch_two_processes(
        ["scripts/fit_image.py", "--prior", str(prior), "--out", str(tmp_path / "two"), *FIT],
        cwd=ROOT,
        clean=tmp_path / "two",
    )
    assert done.returncode == 0, launch_failure(done)
    two = read_json(tmp_path / "two/summary.json")
    assert (
        two["train"]["num_processes"] == 2 and read_json(tmp_path / "two/config.json")["num_processes"] == 2
    )
    assert (two["train"]["micro_batch_size"], two["train"]["accumulation_steps"]) == (2, 1)
    assert fit(prior, tmp_path / "one") == 0
    one = read_json(tmp_path / "one/summary.json")
    assert two["epoch_losses"] == pytest.approx(one["epoch_losses"], rel=1e-5)


# --- bad input: one sentence each, nothing earlier lost -----------------------------------------------------------


def write_images(folder: Path, sizes: list[tuple[int, int]], mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        array = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(array, mode).save(folder / f"{mode.lower()}_{i}.png")


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: (d / "broken.png").write_bytes(b"not a png"), [], "broken.png is corrupt or not an image"),
        (lambda d: (d / "notes.txt").write_text("x"), [], "notes.txt is not a PNG or JPEG file; remove it"),
        (lambda d: write_images(d, [(9, 9)]), [], "have different sizes"),
        (lambda d: None, ["--image_size", "16"], "are 16x16 but the prior's tokenizer works on 8x8 images"),
        (lambda d: None, ["--n_train", "40"], "exceeds the 6 images available"),
    ],
)
def test_bad_image_folders(prior, tmp_path, capsys, make, extra, message) -> None:
    folder = tmp_path / "images"
    write_images(folder, [(8, 8)] * 6)
    make(folder)
    out = tmp_path / "run"
    argv = ["--data", str(folder), "--n_train", "2", "--n_eval", "2", "--batch_size", "2", *extra]
    assert fit(prior, out, *argv) == 2
    error = last_error(capsys)
    assert error.startswith("error: ") and message in error
    assert not out.exists() or not any(out.iterdir())  # nothing half-written, so a corrected rerun just works


def test_grey_and_rgb_images_mix(prior, tmp_path) -> None:
    folder = tmp_path / "images"
    write_images(folder, [(8, 8)] * 3)
    write_images(folder, [(8, 8)] * 3, mode="L")
    out = tmp_path / "run"
    assert fit(prior, out, "--data", str(folder), "--n_train", "2", "--n_eval", "2", "--batch_size", "2") == 0
    assert read_json(out / "manifest.json")["origin"]["converted_to_rgb"] == ["l_0.png", "l_1.png", "l_2.png"]


def test_bad_priors(prior, tmp_path, capsys, monkeypatch) -> None:
    mismatched = tmp_path / "mismatched"
    shutil.copytree(prior, mismatched)
    PaletteTokenizer(torch.rand(5, 3), grid=(8, 8)).save(mismatched / "tokenizer.pt")
    assert fit(mismatched, tmp_path / "r1") == 2
    assert "palette has 5 colours but the model predicts 8 image tokens" in last_error(capsys)
    assert fit(tmp_path / "missing", tmp_path / "r2") == 2
    error = last_error(capsys)
    assert "no pretrained prior at" in error and "hyperfit pretrain-image" in error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paper = ["fit-image", "--preset", "paper", "--prior", "no-such-org/imagegpt", "--precision", "fp32"]
    assert hyperfit([*paper, "--out", str(tmp_path / "r3")]) == 2
    assert "could not be loaded" in last_error(capsys)
    assert fit(prior, tmp_path / "r4", "--data", "cifar10", "--data_root", str(tmp_path / "none")) == 2
    assert "CIFAR-10 is not under" in last_error(capsys)
    before = (prior / "summary.json").read_text()
    assert fit(prior, tmp_path / "r5", "--n_eval", "500") == 2
    assert "sets aside only" in last_error(capsys)
    assert (prior / "summary.json").read_text() == before


@pytest.mark.parametrize("command", ["fit-image", "pretrain-image"])
def test_help_lists_every_option(command, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        hyperfit([command, "--help"])
    assert done.value.code == 0 and "--out" in capsys.readouterr().out


def test_sampling_names_sampling_strategies_only(tmp_path, capsys) -> None:
    """--sampling is a list of the shared table's sampling strategies (the fix for a check that a later module
    constant had shadowed, which refused even the default)."""
    from hyperfit.recipes.fit_image import ImageEvalConfig

    assert ImageEvalConfig(sampling="top_p, min_p,top_p").sampling_names() == ["top_p", "min_p"]
    assert ImageEvalConfig().sampling_names() == ["top_p"]
    for bad in ("greedy", "top_p,greedy_rep_penalty", ","):
        assert hyperfit(["fit-image", "--sampling", bad, "--out", str(tmp_path / "r")]) == 2
        error = last_error(capsys)
        assert "is not a sampling strategy; use one or more of top_p, min_p, typical" in error, error
    assert not (tmp_path / "r").exists()


def test_the_default_prior_has_a_learned_vq_tokenizer_and_the_palette_stays_a_flag() -> None:
    from hyperfit.common.config import parse_recipe_config
    from hyperfit.recipes.pretrain_image import DEFAULT_PRESET, PRESETS, PretrainImageConfig

    def data(*argv: str):
        argv = ["--preset", DEFAULT_PRESET, *argv]  # as `hyperfit pretrain-image` adds it
        return parse_recipe_config(PretrainImageConfig, argv, presets=PRESETS).data

    assert (data().tokenizer, data().vocab) == ("vqvae", 128)
    assert (data("--tokenizer", "palette").tokenizer, data("--tokenizer", "palette").vocab) == ("palette", 64)
    assert data("--tokenizer", "palette", "--vocab", "16").vocab == 16

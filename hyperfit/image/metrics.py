"""Image-side measures of completions: error against the truth, stripes, diversity, copying, FID/KID.

The token-side measures (TTR, rep-n, copy spans) come from ``hyperfit.common.analysis`` unchanged; this module adds
what only pixels and the token grid can say (the paper's §7.1: an original model's greedy completions repeat the
last context row down the image as flat stripes). Every pixel measure is taken on the completed region only, in
[0, 1] pixel units, on images decoded from codes (so a completion equal to the truth has error 0).
FID/KID follow torch-fidelity / clean-fid: torch-fidelity's Inception with the standard FID weights when they are
available, else any feature extractor (timm's), and the report says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from hyperfit.common.analysis import longest_copied_spans, mean_ttr, ngram_repeats, rep_n, ttr
from hyperfit.common.evaluate import FIGURES, Ratio, figure_intervals
from hyperfit.common.runs import HyperfitError

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
"""pixels[b, 3, h, w] in [0, 1] -> features[b, d]."""

# The image measures that are means (or corpus ratios) over completed images, from each image's parts: their
# intervals and paired differences resample images (``hyperfit.common.evaluate``).
IMAGE_FIGURES: dict[str, Ratio] = {
    **FIGURES,
    "ttr_all": Ratio("ttr_all"),
    "rep_2": Ratio("rep_2_repeats", "rep_2_ngrams"),
    "stripe_score": Ratio("stripe"),
    "stripe_score_90": Ratio("stripe_90"),
    "longest_run": Ratio("longest_run"),
    "mse": Ratio("mse"),
    "psnr": Ratio("psnr"),
    "nn_distance": Ratio("nn_distance"),
    "nn_copy_share": Ratio("nn_copy"),
    "copy_mean_longest_span": Ratio("copy_span"),
}


def completed_mask(grid: tuple[int, int], n_context: int, size: tuple[int, int]) -> torch.Tensor:
    """bool[h, w]: True on the pixels of the tokens after the first ``n_context`` (raster order on ``grid``)."""
    gh, gw = grid
    h, w = size
    if h % gh or w % gw:
        raise ValueError(f"images of {h}x{w} do not split into a {gh}x{gw} token grid.")
    generated = torch.arange(gh * gw) >= n_context
    return repeat(generated, "(gh gw) -> (gh sh) (gw sw)", gh=gh, gw=gw, sh=h // gh, sw=w // gw)


def _region(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pixels[b, c, h, w] -> the masked pixels of each image, flattened: [b, c * mask.sum()]."""
    return rearrange(pixels.float()[:, :, mask.to(pixels.device)], "b c n -> b (c n)")


def completion_mse(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image ``[b]`` between ``pred`` and ``true`` pixels[b, c, h, w] where ``mask``."""
    return (_region(pred, mask) - _region(true, mask)).pow(2).mean(1)


def psnr(mse: torch.Tensor, *, floor: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for pixels in [0, 1]: ``10 log10(1 / mse)`` (mse floored: at most 100 dB)."""
    return 10 * torch.log10(1 / mse.clamp(min=floor))


def _rows(codes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return rearrange(codes, "b (gh gw) -> b gh gw", gh=grid[0], gw=grid[1])


def stripe_shares(
    codes: torch.Tensor, *, grid: tuple[int, int], n_context: int, min_match: float = 1.0
) -> torch.Tensor:
    """Per image ``[b]``, the share of its completed token rows that repeat the row above: the vertical stripes of
    an original greedy prior.

    A row counts as completed when all its tokens come after the first ``n_context``; it repeats the row above
    when at least ``min_match`` of its tokens equal the tokens directly above (1.0: identical rows). The first
    completed row is compared with the last context row, which is exactly the failure of copying the context
    down the image. 0.0 for every image if no row is completed.
    """
    rows = _rows(codes, grid)
    first = math.ceil(n_context / grid[1])
    if first >= grid[0]:
        return torch.zeros(codes.size(0))
    first = max(first, 1)
    same = (rows[:, first:] == rows[:, first - 1 : -1]).float().mean(-1)  # [b, completed rows]
    return (same >= min_match - 1e-9).float().mean(-1)


def stripe_score(
    codes: torch.Tensor, *, grid: tuple[int, int], n_context: int, min_match: float = 1.0
) -> float:
    """Mean over images of :func:`stripe_shares`: the share of completed rows that repeat the row above."""
    return float(stripe_shares(codes, grid=grid, n_context=n_context, min_match=min_match).mean())


def longest_runs(codes: torch.Tensor, *, n_context: int) -> torch.Tensor:
    """Longest run of one repeated token in each completion (generated codes only, raster order), ``[b]``."""
    generated = codes[:, n_context:]
    runs = torch.ones(generated.size(0), dtype=torch.long, device=codes.device)
    best = runs.clone()
    for i in range(1, generated.size(1)):
        runs = torch.where(generated[:, i] == generated[:, i - 1], runs + 1, torch.ones_like(runs))
        best = torch.maximum(best, runs)
    return best


def pairwise_distance(pixels: torch.Tensor, mask: torch.Tensor) -> float:
    """Diversity across completions: mean over pairs of images of the RMS pixel difference on ``mask``."""
    x = _region(pixels, mask)
    if len(x) < 2:
        return 0.0
    d2 = torch.cdist(x.double(), x.double()).pow(2) / x.size(1)
    pairs = torch.triu_indices(len(x), len(x), offset=1)
    return float(d2[pairs[0], pairs[1]].sqrt().mean())


def nearest_distance(
    pixels: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, the MSE on ``mask`` to the nearest ``reference`` image (same pixel positions) and its
    index: ``(mse[b], index[b])``. With the training images as reference: 0 means a copied completion."""
    x, r = _region(pixels, mask).double(), _region(reference, mask).double()
    d2 = torch.cdist(x, r).pow(2) / x.size(1)
    best = d2.min(1)
    return best.values.float(), best.indices


@torch.no_grad()
def completion_report(
    codes: torch.Tensor,
    true_codes: torch.Tensor,
    *,
    tokenizer,
    n_context: int,
    train_codes: torch.Tensor,
    copy_mse: float = 1e-3,
) -> dict[str, float]:
    """Token and image measures of completed images ``codes[b, t]`` against ``true_codes[b, t]``.

    Token side, on the generated codes only (shared analysis): ``ttr`` (the paper's: the last 96 generated
    codes) and ``ttr_all`` (all generated codes),
    ``rep_2`` / ``rep_4`` (SimCTG), ``copy_mean_longest_span`` (tokens contiguously found in a training image's
    raster sequence). Image side, on the completed region: ``mse`` / ``psnr`` against the truth, ``stripe_score``
    (identical rows) and ``stripe_score_90`` (rows ≥ 90 % equal), ``longest_run`` (mean over images),
    ``pixel_diversity`` (mean pairwise RMS between completions), ``distinct_completions`` (share of distinct
    completions), ``nn_distance`` (mean MSE to the nearest training image) and ``nn_copy_share`` (share of
    completions within ``copy_mse`` of a training image). Passing the truth as ``codes`` gives the level a faithful
    completion would have: flat or vertical-edge patches repeat rows and sit near flat training patches anyway.

    Every measure that is a mean over images also has ``<name>_ci``, its 95 % bootstrap interval over images, and
    ``units`` holds each image's parts (:data:`IMAGE_FIGURES`; pop it before logging).
    """
    grid = tokenizer.grid
    generated = codes[:, n_context:]
    pred = tokenizer.decode_codes(codes)
    true = tokenizer.decode_codes(true_codes)
    train = tokenizer.decode_codes(train_codes)
    mask = completed_mask(grid, n_context, tuple(pred.shape[-2:]))
    mse = completion_mse(pred, true, mask)
    nn_mse, _ = nearest_distance(pred, train, mask)
    spans = longest_copied_spans(list(generated), list(train_codes))
    stripes = stripe_shares(codes, grid=grid, n_context=n_context)
    stripes_90 = stripe_shares(codes, grid=grid, n_context=n_context, min_match=0.9)
    runs = longest_runs(codes, n_context=n_context).float()
    image_psnr = psnr(mse)
    metrics = {
        "ttr": mean_ttr(list(generated), window=96),
        "ttr_all": mean_ttr(list(generated), window=None),
        "rep_2": rep_n(list(generated), n=2),
        "rep_4": rep_n(list(generated), n=4),
        "stripe_score": float(stripes.mean()),
        "stripe_score_90": float(stripes_90.mean()),
        "longest_run": float(runs.mean()),
        "mse": float(mse.mean()),
        "psnr": float(image_psnr.mean()),
        "pixel_diversity": pairwise_distance(pred, mask),
        "distinct_completions": len({tuple(row.tolist()) for row in generated}) / len(generated),
        "nn_distance": float(nn_mse.mean()),
        "nn_copy_share": float((nn_mse < copy_mse).float().mean()),
        "copy_mean_longest_span": sum(spans) / len(spans),
    }
    units = []
    for i, row in enumerate(generated):
        repeats_2, ngrams_2 = ngram_repeats(row, n=2)
        repeats_4, ngrams_4 = ngram_repeats(row, n=4)
        units.append(
            {
                "ttr": ttr(row, window=96),
                "ttr_all": ttr(row, window=None),
                "rep_2_repeats": float(repeats_2),
                "rep_2_ngrams": float(ngrams_2),
                "rep_4_repeats": float(repeats_4),
                "rep_4_ngrams": float(ngrams_4),
                "stripe": float(stripes[i]),
                "stripe_90": float(stripes_90[i]),
                "longest_run": float(runs[i]),
                "mse": float(mse[i]),
                "psnr": float(image_psnr[i]),
                "nn_distance": float(nn_mse[i]),
                "nn_copy": float(nn_mse[i] < copy_mse),
                "copy_span": float(spans[i]),
            }
        )
    intervals = figure_intervals(units, figures=IMAGE_FIGURES, names=list(metrics))
    return {**metrics, **intervals, "units": units}


# ------------------------------------------------------------------------------------------------------------
# FID / KID with an injectable feature extractor
# ------------------------------------------------------------------------------------------------------------


def timm_extractor(
    name: str = "inception_v3",
    *,
    pretrained: bool = True,
    input_size: int | None = None,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """A timm model without its classifier as a feature extractor (pixels resized to its input size and
    normalised with its mean/std), run on ``device`` whatever device the pixels come from; features return on
    the CPU. ``pretrained=False`` gives random weights (tests); ``pretrained=True`` needs the weights in the
    local cache or network."""
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=0).eval().to(device)
    cfg = model.pretrained_cfg
    side = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(device).float().expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(side, side), mode="bilinear")
        return model((x - mean) / std).flatten(1).cpu()

    return extract


def features(pixels: torch.Tensor, extractor: FeatureExtractor, *, batch_size: int = 64) -> torch.Tensor:
    """features[n, d] (float64) of pixels[n, c, h, w], in batches."""
    return torch.cat(
        [extractor(pixels[i : i + batch_size]).double() for i in range(0, len(pixels), batch_size)]
    )


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, the trace of the root from the eigenvalues of
    ``S_a S_b`` (real and non-negative up to rounding), as pytorch-fid's ``sqrtm`` route gives."""
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eig = np.linalg.eigvals(sa @ sb)
    root_trace = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * root_trace)


def kernel_distance(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    *,
    subsets: int = 10,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD² with the cubic polynomial kernel ``(x·y / d + 1)^3`` (Bińkowski et al. 2018,
    torch-fidelity's defaults), averaged over ``subsets`` random subsets of ``min(subset_size, n)`` per side.
    Returns (mean, standard deviation)."""
    a, b = feats_a.double().cpu(), feats_b.double().cpu()
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 images on each side.")
    d = a.size(1)
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3), ((y @ y.T / d + 1) ** 3), ((x @ y.T / d + 1) ** 3)
        off = 1 - torch.eye(m, dtype=torch.float64)
        mmd = (kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1)) - 2 * kxy.mean()
        values.append(float(mmd))
    return float(np.mean(values)), float(np.std(values))


def fid_kid(
    pixels: torch.Tensor, reference: torch.Tensor, extractor: FeatureExtractor, *, subset_size: int = 1000
) -> dict[str, float]:
    """FID and KID (mean, std) of ``pixels`` against ``reference`` images, through ``extractor``."""
    fa, fb = features(pixels, extractor), features(reference, extractor)
    kid, kid_std = kernel_distance(fa, fb, subset_size=subset_size)
    return {"fid": frechet_distance(fa, fb), "kid": kid, "kid_std": kid_std}


STANDARD_FID = "standard"  # --fid_model value for the standard FID network
STANDARD_FID_WEIGHTS = (
    "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file in the torch hub cache
)


def standard_fid_extractor(
    *, download: bool = False, device: torch.device | str = "cpu"
) -> tuple[FeatureExtractor | None, str]:
    """(torch-fidelity's Inception-v3 with the standard FID weights, "") or (None, why not).

    The weights are read from the torch hub cache (where torch-fidelity keeps them after its first download);
    only with ``download`` may torch-fidelity fetch them (network).
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        return None, "torch-fidelity is not installed (pip install 'hyperfit[fid]')"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FID_WEIGHTS
    if not weights.exists() and not download:
        return None, f"{STANDARD_FID_WEIGHTS} is not in {weights.parent} (--fid_download true fetches it)"
    try:
        network = (
            FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048"],
                feature_extractor_weights_path=str(weights) if weights.exists() else None,
            )
            .eval()
            .to(device)
        )
    except Exception as err:  # a failed download or a damaged file: fall back, and say why
        return None, f"torch-fidelity could not load them ({type(err).__name__}: {err})"

    @torch.no_grad()
    def extract(pixels: torch.Tensor) -> torch.Tensor:
        # torch-fidelity takes 8-bit RGB images of any size and resizes them to 299 x 299 itself.
        images = (pixels.to(device).float().clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
        return network(images)[0].cpu()

    return extract, ""


def fid_extractor(
    fid_model: str, *, pretrained: bool, download: bool = False, device: torch.device | str = "cpu"
) -> tuple[FeatureExtractor, dict]:
    """The feature extractor for ``--fid_model`` and what the report says about it: ``{"extractor", "standard",
    "note"}``. ``standard`` falls back to timm's inception_v3 when the standard weights are not available."""
    weights = "pretrained" if pretrained else "random"
    if fid_model == STANDARD_FID:
        extractor, why_not = standard_fid_extractor(download=download, device=device)
        if extractor is not None:
            return extractor, {
                "extractor": "torch-fidelity inception-v3-compat, the standard FID weights",
                "standard": True,
                "note": "These numbers compare with published FID/KID (at this image count and size).",
            }
        fid_model, note = (
            "inception_v3",
            f"The standard FID Inception weights are not available: {why_not}. These are timm inception_v3 "
            f"features ({weights} weights) instead: compare them only within this run, not with published FID.",
        )
    else:
        note = "Not the standard FID network: compare these numbers only within this run, not with published FID."
    return timm_extractor_for(fid_model, pretrained=pretrained, device=device), {
        "extractor": f"timm {fid_model} ({weights} weights)",
        "standard": False,
        "note": note,
    }


def timm_extractor_for(fid_model: str, *, pretrained: bool, device: torch.device | str) -> FeatureExtractor:
    try:
        return timm_extractor(fid_model, pretrained=pretrained, device=device)
    except Exception as err:  # timm raises many kinds (unknown name, no weights offline)
        raise HyperfitError(
            f"the FID model {fid_model!r} could not be created ({type(err).__name__}: {err}); "
            "leave --fid_model unset, or pass --fid_pretrained false for random features."
        ) from err


def add_fid_kid(
    columns: dict,
    completions: dict,
    truth: torch.Tensor,
    *,
    tokenizer,
    fid_model: str,
    pretrained: bool,
    download: bool = False,
    device: torch.device | str = "cpu",
) -> dict:
    """Add FID and KID against the decoded ``truth`` to ``columns[name]`` for each ``completions[name]``
    (codes[b, t]), the feature network on ``device``; return what the report says about the feature extractor
    (``fid_extractor``)."""
    extractor, about = fid_extractor(fid_model, pretrained=pretrained, download=download, device=device)
    reference = tokenizer.decode_codes(truth)
    for name, codes in completions.items():
        columns[name].update(
            fid_kid(tokenizer.decode_codes(codes), reference, extractor, subset_size=len(truth))
        )
    return about

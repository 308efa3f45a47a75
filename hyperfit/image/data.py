"""Image sets -> pixels[n, 3, h, w] float in [0, 1] plus a manifest saying where each image came from.

Offline sources: scikit-image's bundled photographs cut into patches (the offline demo's data), sklearn's digits,
and a folder of PNG/JPEG files; `split_images` draws the disjoint train / held-out sets (the paper hyperfits on
2,000 random CIFAR-10 images).
`build_image_splits` turns fit-image's data flags (also the prior's set-aside pools, or CIFAR-10) into codes
encoded once with the prior's tokenizer, as `hyperfit.text.data.build_text_splits` does for text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from hyperfit.common.runs import HyperfitError, read_json, sha256_ids
from hyperfit.image.tokenizers import describe_tokenizer

# The photographs bundled inside the scikit-image wheel (no pooch download), with the file each loader reads.
# Left out on purpose: drawings and synthetic images (horse, logo, colorwheel, chessboard, phantom), `cat`
# (the same photo as chelsea) and anything that needs a download (eagle, brain, cells3d, kidney, lily, ...).
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "clock": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "microaneurysms": "microaneurysms.png",
    "moon": "moon.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
    "stereo_motorcycle": "motorcycle_left.png",
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

POOLS_FILE = "pools.pt"  # written by pretrain_image.py into the prior's run directory


@dataclass
class ImageDataConfig:
    """Which images to hyperfit on and which to complete (disjoint), and how many of each."""

    data: str = field(
        default="prior",
        metadata={
            "help": "prior (the patches pretrain-image set aside, pixel-disjoint from its pretraining set) | "
            "digits (sklearn) | cifar10 (torchvision, already downloaded under --data_root) | a folder of PNG/JPEG"
        },
    )
    data_root: str = field(
        default="data/cifar10",
        metadata={"help": "Where torchvision's CIFAR-10 lies (never downloaded here)."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Resize folder / digits images to N x N; unset = keep their size."}
    )
    n_train: int = field(default=32, metadata={"help": "Hyperfitting images (the offline demo: 32)."})
    n_eval: int = field(default=64, metadata={"help": "Held-out images completed at each evaluation."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the image selection."})

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_eval < 2:
            raise HyperfitError("n_train must be ≥ 1 and n_eval ≥ 2; fix --n_train / --n_eval.")


@dataclass
class ImageSplits:
    """Codes ready for training and evaluation, plus the manifest that identifies them."""

    train_codes: torch.Tensor  # LongTensor[n_train, t], no SOS
    eval_codes: torch.Tensor  # LongTensor[n_eval, t]; contexts are eval_codes[:, :n_context]
    manifest: dict


def _to_pixels(array: np.ndarray) -> Tensor:
    """uint8 / uint16 / float array [h, w] or [h, w, c] -> pixels[3, h, w] float32 in [0, 1] (grey repeated, alpha dropped)."""
    if array.dtype == np.uint8:
        x = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif array.dtype == np.uint16:
        x = torch.from_numpy(array.astype(np.float32) / 65535.0)
    else:
        x = torch.from_numpy(np.asarray(array, dtype=np.float32)).clamp(0, 1)
    if x.ndim == 2:
        return repeat(x, "h w -> c h w", c=3).contiguous()
    return rearrange(x[..., :3], "h w c -> c h w").contiguous()


def _resize(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """pixels[c, h, w] -> pixels[c, size[0], size[1]]: bilinear with antialiasing (area-weighted when shrinking)."""
    if tuple(pixels.shape[1:]) == tuple(size):
        return pixels
    out = F.interpolate(pixels[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def load_skimage_patches(
    *,
    patch: int = 16,
    per_image: int = 300,
    resize: int = 256,
    seed: int = 0,
    photos: list[str] | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """scikit-image's bundled photographs -> random patches[n, 3, patch, patch] in [0, 1] and a manifest.

    Each photo (all of `SKIMAGE_PHOTOS` whose file is on disk, or the named `photos`) is resized to
    resize x resize (aspect ratio not kept), grey photos are repeated to RGB, and `per_image` top-left corners
    are drawn uniformly with a generator seeded by `seed` (deterministic; patches may overlap). The manifest
    lists the photos used and skipped and, per patch in order, `{"photo", "y", "x"}` in resized pixels.
    """
    import skimage
    import skimage.data

    if patch > resize:
        raise ValueError(
            f"patch={patch} is larger than resize={resize}; pass a patch size at most the resized side."
        )
    names = list(SKIMAGE_PHOTOS) if photos is None else list(photos)
    unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
    if unknown:
        raise ValueError(f"unknown skimage photo(s) {unknown}; choose from {sorted(SKIMAGE_PHOTOS)}.")
    g = torch.Generator().manual_seed(seed)
    patches: list[Tensor] = []
    crops: list[dict[str, Any]] = []
    used: list[str] = []
    skipped: list[str] = []
    for name in names:
        # Check the file first: on a machine with pooch a missing file would trigger a network download.
        if not (Path(skimage.data.data_dir) / SKIMAGE_PHOTOS[name]).is_file():
            skipped.append(name)
            continue
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # a broken optional dependency must not stop the other photos
            skipped.append(name)
            continue
        if isinstance(array, tuple):  # stereo_motorcycle -> (left, right, disparity)
            array = array[0]
        pixels = _resize(_to_pixels(np.asarray(array)), (resize, resize))
        ys = torch.randint(0, resize - patch + 1, (per_image,), generator=g)
        xs = torch.randint(0, resize - patch + 1, (per_image,), generator=g)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            patches.append(pixels[:, y : y + patch, x : x + patch])
            crops.append({"photo": name, "y": y, "x": x})
        used.append(name)
    if not patches:
        raise ValueError(
            "none of the scikit-image photographs could be loaded offline; reinstall scikit-image "
            "(pip install --force-reinstall scikit-image) or use load_image_folder."
        )
    manifest = {
        "source": "skimage.data",
        "skimage_version": skimage.__version__,
        "photos": used,
        "skipped": skipped,
        "resize": resize,
        "patch": patch,
        "per_image": per_image,
        "seed": seed,
        "n": len(patches),
        "crops": crops,
    }
    return torch.stack(patches), manifest


def load_digits_images(*, size: int = 8) -> tuple[Tensor, Tensor]:
    """sklearn's 1,797 handwritten digits -> (pixels[1797, 3, size, size] in [0, 1], labels LongTensor[1797]).

    The 8x8 grey levels 0-16 are divided by 16 (white strokes on black) and repeated to RGB; other sizes are
    resized bilinearly with antialiasing.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.from_numpy(digits.images.astype(np.float32) / 16.0)
    pixels = repeat(grey, "n h w -> n c h w", c=3)
    if size != 8:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    return pixels.contiguous(), torch.from_numpy(digits.target).long()


def load_image_folder(
    path: str | os.PathLike[str], *, size: int | None = None
) -> tuple[Tensor, dict[str, Any]]:
    """PNG/JPEG files in a folder (not its subfolders) -> (pixels[n, 3, h, w] in [0, 1], manifest), sorted by name.

    Grey, palette and alpha images are converted to RGB rather than refused (grey is repeated to 3 channels
    exactly; alpha is dropped); the manifest's `files` records each file's original mode and size and
    `converted_to_rgb` names the converted files. Hidden files (".*") are ignored; any other non-PNG/JPEG file
    is an error, so that a stray file is noticed rather than silently skipped. With `size=None` all images
    must share one size; with `size=N` each is resized to N x N (bicubic, aspect ratio not kept).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist; check the path.")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{folder} is a file, not a folder of images; pass the folder that contains it."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        also = f" (and the {len(others) - 1} other non-image file(s))" if len(others) > 1 else ""
        raise ValueError(
            f"{folder / others[0]} is not a PNG or JPEG file; remove it{also} from the image folder."
        )
    if not files:
        raise ValueError(
            f"image folder {folder} holds no PNG or JPEG files; add images or point to another folder."
        )

    arrays: list[np.ndarray] = []
    entries: list[dict[str, Any]] = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                mode, (w, h) = im.mode, im.size
                if mode.startswith("I;16") or mode == "I":
                    array = np.asarray(im).astype(np.uint16)
                else:
                    array = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ValueError(
                f"{p} is corrupt or not an image ({err}); remove it from the image folder."
            ) from err
        arrays.append(array)
        entries.append({"name": p.name, "mode": mode, "height": h, "width": w})

    if size is None:
        sizes = {(e["height"], e["width"]) for e in entries}
        if len(sizes) > 1:
            a = entries[0]
            b = next(e for e in entries if (e["height"], e["width"]) != (a["height"], a["width"]))
            raise ValueError(
                f"images in {folder} have different sizes ({a['name']} is {a['width']}x{a['height']}, "
                f"{b['name']} is {b['width']}x{b['height']}); pass --image-size N (size=N) to resize all to N x N."
            )
    pixels = []
    for array in arrays:
        x = _to_pixels(array)
        if size is not None:
            x = F.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)
        pixels.append(x)
    manifest = {
        "source": "folder",
        "path": str(folder.resolve()),
        "n": len(files),
        "size": size,
        "files": entries,
        "converted_to_rgb": [e["name"] for e in entries if e["mode"] != "RGB"],
    }
    return torch.stack(pixels), manifest


class ImageSplit(NamedTuple):
    """Disjoint train / held-out selections: pixels and their indices into the input set."""

    train_pixels: Tensor
    eval_pixels: Tensor
    train_indices: Tensor
    eval_indices: Tensor


def split_images(images: Tensor, *, n_train: int, n_eval: int, seed: int) -> ImageSplit:
    """images[n, c, h, w] -> seeded disjoint `n_train` training and `n_eval` held-out images, with indices.

    One seeded permutation: the held-out images are its first `n_eval` entries and the training images the
    next `n_train`, so for a seed the held-out set stays the same whatever `n_train` is (quantity sweeps compare
    on the same images). Indices are returned sorted, so selections keep the input (manifest) order.
    """
    n = len(images)
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"n_train and n_eval must be non-negative but got {n_train} and {n_eval}.")
    if n_train + n_eval > n:
        raise ValueError(
            f"n_train={n_train} plus n_eval={n_eval} exceeds the {n} images available; ask for fewer or load more."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    eval_idx = perm[:n_eval].sort().values
    train_idx = perm[n_eval : n_eval + n_train].sort().values
    return ImageSplit(images[train_idx], images[eval_idx], train_idx, eval_idx)


# ---------------------------------------------------------------------------------------------------------------
# fit-image's splits: the configured images, checked against the prior's tokenizer and encoded once


def _image_size(tokenizer) -> tuple[int, int]:
    """The pixel size the tokenizer (and so the prior) was built for: one token per pixel for a palette."""
    config = getattr(tokenizer, "config", None)
    return tuple(config["image_size"]) if isinstance(config, dict) else tuple(tokenizer.grid)


def load_images(data_cfg: ImageDataConfig, prior: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(hyperfitting pixels, held-out pixels, manifest) from the configured source; disjoint by construction."""
    source = data_cfg.data
    if source == "prior":
        pools_path = Path(prior) / POOLS_FILE
        if not pools_path.exists():
            raise HyperfitError(
                f"--data prior needs the image pools of a pretrain-image run, but {pools_path} does not exist; "
                "pass --data cifar10, digits or a folder of images."
            )
        pools = torch.load(pools_path)
        pool_manifest = read_json(Path(prior) / "manifest.json")
        g = torch.Generator().manual_seed(data_cfg.data_seed)
        chosen = {}
        for name, n in (("train_pool", data_cfg.n_train), ("eval_pool", data_cfg.n_eval)):
            if n > len(pools[name]):
                raise HyperfitError(
                    f"the prior sets aside only {len(pools[name])} {name} patches but {n} were asked for; lower "
                    "--n_train / --n_eval or rebuild the prior with a larger --per_image."
                )
            chosen[name] = torch.randperm(len(pools[name]), generator=g)[:n].sort().values
        manifest = {
            "source": f"prior:{prior}",
            "origin": pool_manifest["regions"],
            "train_crops": [
                pool_manifest["pool_crops"]["train_pool"][i] for i in chosen["train_pool"].tolist()
            ],
            "eval_crops": [pool_manifest["pool_crops"]["eval_pool"][i] for i in chosen["eval_pool"].tolist()],
        }
        return pools["train_pool"][chosen["train_pool"]], pools["eval_pool"][chosen["eval_pool"]], manifest
    if source == "cifar10":
        train_pixels, eval_pixels = _load_cifar10(data_cfg)
        return train_pixels, eval_pixels, {"source": "cifar10", "origin": data_cfg.data_root}
    try:
        if source == "digits":
            images, _ = load_digits_images(size=data_cfg.image_size or 8)
            origin = {"source": "digits"}
        else:
            images, origin = load_image_folder(source, size=data_cfg.image_size)
        split = split_images(
            images, n_train=data_cfg.n_train, n_eval=data_cfg.n_eval, seed=data_cfg.data_seed
        )
    except (OSError, ValueError) as err:
        raise HyperfitError(str(err)) from err
    manifest = {
        "source": source,
        "origin": origin,
        "train_indices": split.train_indices.tolist(),
        "eval_indices": split.eval_indices.tolist(),
    }
    return split.train_pixels, split.eval_pixels, manifest


def _load_cifar10(data_cfg: ImageDataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_train`` random CIFAR-10 training images and ``n_eval`` random test images, pixels in [0, 1]."""
    from torchvision.datasets import CIFAR10

    try:
        train_set = CIFAR10(data_cfg.data_root, train=True, download=False)
        test_set = CIFAR10(data_cfg.data_root, train=False, download=False)
    except RuntimeError as err:
        raise HyperfitError(
            f"CIFAR-10 is not under {data_cfg.data_root} ({err}); download it once with torchvision "
            "(CIFAR10(root, download=True)) and pass --data_root, or use the offline --data prior."
        ) from err
    g = torch.Generator().manual_seed(data_cfg.data_seed)

    def pick(dataset, n: int) -> torch.Tensor:
        index = torch.randperm(len(dataset.data), generator=g)[:n].sort().values
        return torch.from_numpy(dataset.data[index.numpy()]).permute(0, 3, 1, 2).float() / 255

    return pick(train_set, data_cfg.n_train), pick(test_set, data_cfg.n_eval)


def build_image_splits(data_cfg: ImageDataConfig, tokenizer, *, prior: str) -> ImageSplits:
    """Load the images, check them against the tokenizer, and encode them once."""
    train_pixels, eval_pixels, manifest = load_images(data_cfg, prior)
    expected = _image_size(tokenizer)
    size = tuple(train_pixels.shape[-2:])
    if size != expected:
        raise HyperfitError(
            f"the images from {data_cfg.data} are {size[1]}x{size[0]} but the prior's tokenizer works on "
            f"{expected[1]}x{expected[0]} images; pass --image_size {expected[0]} to resize them."
        )
    try:
        train_codes = tokenizer.encode_images(train_pixels)
        eval_codes = tokenizer.encode_images(eval_pixels)
    except ValueError as err:
        raise HyperfitError(
            f"the images from {data_cfg.data} do not fit the prior's tokenizer: {err}"
        ) from err
    manifest.update(
        tokenizer=describe_tokenizer(tokenizer),
        image_size=list(size),
        train_codes_sha256=sha256_ids(train_codes),
        eval_codes_sha256=sha256_ids(eval_codes),
    )
    return ImageSplits(train_codes, eval_codes, manifest)


def save_splits(splits: ImageSplits, directory: Path) -> None:
    """Write the exact codes (``data.pt``, atomically) so a run can be re-checked bit for bit."""
    tmp = directory / ".data.pt.tmp"
    torch.save({"train_codes": splits.train_codes, "eval_codes": splits.eval_codes}, tmp)
    tmp.replace(directory / "data.pt")

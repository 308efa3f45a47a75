"""Image edges: tokenizer round trips and codebook lookups, ImageGPT cluster compatibility, image-set loaders
and their error sentences, grids. Offline, CPU, tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hyperfit.image.data import (
    load_digits_images,
    load_image_folder,
    load_skimage_patches,
    split_images,
)
from hyperfit.image.render import codes_to_pil, mask_context, save_grid, tile_grid
from hyperfit.image.tokenizers import (
    ImageTokenizer,
    PaletteTokenizer,
    VQVAETokenizer,
    check_vocab,
    fit_palette,
    load_image_tokenizer,
    train_vqvae,
)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth random 16x16 RGB images [24, 3, 16, 16] in [0, 1] (upsampled noise, so neighbours correlate)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(24, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def palette(images: torch.Tensor) -> PaletteTokenizer:
    return fit_palette(images, n_colors=16, seed=0, iters=10)


@pytest.fixture(scope="module")
def vqvae(images: torch.Tensor) -> tuple[VQVAETokenizer, dict]:
    return train_vqvae(images, codebook_size=32, latent_dim=8, hidden=16, epochs=1, batch_size=8, seed=0)


# --- palette -----------------------------------------------------------------------------------------------------


def test_palette_round_trip(palette: PaletteTokenizer, images: torch.Tensor) -> None:
    assert isinstance(palette, ImageTokenizer)
    assert palette.vocab_size == 16 and palette.grid == (16, 16)
    codes = palette.encode_images(images)
    assert codes.shape == (24, 256) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < palette.vocab_size
    pixels = palette.decode_codes(codes)
    assert pixels.shape == images.shape and pixels.dtype == torch.float32
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    assert torch.equal(palette.encode_images(pixels), codes)
    # raster order: token i*w + j is pixel (i, j)
    one = palette.decode_codes(codes[:1])
    assert torch.equal(one[0, :, 3, 5], palette.palette[codes[0, 3 * 16 + 5]])
    assert float((pixels - images).pow(2).mean()) < 0.01


def test_palette_is_deterministic_for_a_seed(images: torch.Tensor, palette: PaletteTokenizer) -> None:
    again = fit_palette(images, n_colors=16, seed=0, iters=10)
    assert torch.equal(again.palette, palette.palette)
    other = fit_palette(images, n_colors=16, seed=1, iters=10)
    assert not torch.equal(other.palette, palette.palette)
    rnd = fit_palette(images, n_colors=16, seed=0, iters=10, init="random")
    assert torch.equal(rnd.palette, fit_palette(images, n_colors=16, seed=0, iters=10, init="random").palette)


def test_palette_channels(palette: PaletteTokenizer) -> None:
    grey = torch.rand(2, 1, 16, 16)
    assert torch.equal(palette.encode_images(grey), palette.encode_images(grey.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="drop the alpha channel"):
        palette.encode_images(torch.rand(2, 4, 16, 16))
    grey_palette = fit_palette(grey, n_colors=4, seed=0)
    with pytest.raises(ValueError, match="3 channels; convert the images to grayscale"):
        grey_palette.encode_images(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="contain id 16 but this palette has 16 image ids"):
        palette.decode_codes(torch.full((1, 256), 16))
    with pytest.raises(ValueError, match="pass grid"):
        palette.decode_codes(torch.zeros(1, 100, dtype=torch.long))


def test_imagegpt_clusters_give_the_processors_ids() -> None:
    from transformers import ImageGPTImageProcessor

    rng = np.random.default_rng(0)
    clusters = rng.uniform(-1, 1, (512, 3)).astype(np.float32)
    uint8 = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    processor = ImageGPTImageProcessor(clusters=clusters, do_resize=False)
    expected = processor(images=list(uint8), return_tensors="pt")["input_ids"]

    tok = PaletteTokenizer.from_imagegpt_clusters(clusters, grid=(8, 8))
    assert tok.vocab_size == 512 and tok.grid == (8, 8)
    pixels = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255
    codes = tok.encode_images(pixels)
    assert torch.equal(codes, expected)
    # decoding follows the ImageGPT model card: np.rint(127.5 * (clusters[ids] + 1)) as uint8
    decoded = (tok.decode_codes(codes) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    card = np.rint(127.5 * (clusters[codes.numpy()] + 1.0)).astype(np.uint8).reshape(3, 8, 8, 3)
    assert np.array_equal(decoded, card)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        PaletteTokenizer.from_imagegpt_clusters(clusters * 255)


# --- VQ-VAE ------------------------------------------------------------------------------------------------------


def test_vqvae_round_trip_and_lookup(vqvae: tuple[VQVAETokenizer, dict], images: torch.Tensor) -> None:
    tok, report = vqvae
    assert isinstance(tok, ImageTokenizer)
    assert tok.vocab_size == 32 and tok.grid == (8, 8)
    codes = tok.encode_images(images)
    assert codes.shape == (24, 64) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 32
    pixels = tok.decode_codes(codes)
    assert pixels.shape == images.shape and pixels.dtype == torch.float32
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0

    with torch.no_grad():
        latents = tok.encode_latents(images)
        quantized, q_codes = tok.quantize(latents)
    assert latents.shape == quantized.shape == (24, 8, 8, 8)
    assert torch.equal(q_codes, codes)
    assert torch.equal(tok.lookup(q_codes), quantized)

    assert set(report) >= {"recon_mse", "codebook_usage", "perplexity", "seconds", "history"}
    assert 0 < report["codebook_usage"] <= 1 and 1 <= report["perplexity"] <= 32
    assert report["recon_mse"] == pytest.approx(float((pixels - images).pow(2).mean()), rel=1e-4)


def test_vqvae_training_is_seeded(images: torch.Tensor, vqvae: tuple[VQVAETokenizer, dict]) -> None:
    state = torch.random.get_rng_state()
    again, _ = train_vqvae(images, codebook_size=32, latent_dim=8, hidden=16, epochs=1, batch_size=8, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert torch.equal(again.codebook, vqvae[0].codebook)


def test_save_and_load_dispatch(tmp_path, palette, vqvae, images) -> None:
    loaded = load_image_tokenizer(palette.save(tmp_path / "palette.pt"))
    assert isinstance(loaded, PaletteTokenizer)
    assert torch.equal(loaded.palette, palette.palette) and loaded.grid == palette.grid
    tok = vqvae[0]
    loaded_vq = load_image_tokenizer(tok.save(tmp_path / "sub" / "vq.pt"))
    assert isinstance(loaded_vq, VQVAETokenizer) and not loaded_vq.training
    assert torch.equal(loaded_vq.encode_images(images), tok.encode_images(images))
    assert list(tmp_path.glob(".*tmp*")) == []
    with pytest.raises(FileNotFoundError, match="no image tokenizer file"):
        load_image_tokenizer(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a tokenizer")
    with pytest.raises(ValueError, match="re-save it"):
        load_image_tokenizer(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="holds a PaletteTokenizer"):
        VQVAETokenizer.load(tmp_path / "palette.pt")


def test_check_vocab(palette, vqvae) -> None:
    check_vocab(palette, 17)
    check_vocab(palette, 16, extra_tokens=0)
    with pytest.raises(ValueError) as err:
        check_vocab(palette, 513)
    assert str(err.value) == (
        "the palette has 16 colours but the model predicts 512 image tokens (513 ids minus 1 special); "
        "retrain the prior with this tokenizer or load the matching palette."
    )
    with pytest.raises(ValueError, match="codebook has 32 codes but the model predicts 16 image tokens"):
        check_vocab(vqvae[0], 17)


# --- image sets --------------------------------------------------------------------------------------------------


def _png(path, size=(8, 8), mode="RGB", value=128) -> None:
    Image.new(mode, size, value if mode == "L" else (value, 20, 200)).save(path)


def test_image_folder_loads_and_converts_grey(tmp_path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a.png", mode="L", value=51)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    pixels, manifest = load_image_folder(tmp_path)
    assert pixels.shape == (2, 3, 8, 8) and pixels.dtype == torch.float32
    assert [f["name"] for f in manifest["files"]] == ["a.png", "b.png"]
    assert manifest["converted_to_rgb"] == ["a.png"]
    assert torch.allclose(pixels[0], torch.full((3, 8, 8), 51 / 255))
    assert torch.allclose(pixels[1, :, 0, 0], torch.tensor([128, 20, 200]) / 255)


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no PNG or JPEG files"):
        load_image_folder(tmp_path)

    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not a PNG or JPEG file; remove it"):
        load_image_folder(tmp_path)
    (tmp_path / "notes.txt").unlink()

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ValueError, match=r"broken\.png is corrupt or not an image .*; remove it"):
        load_image_folder(tmp_path)
    (tmp_path / "broken.png").unlink()

    _png(tmp_path / "big.png", size=(16, 12))
    with pytest.raises(ValueError, match="big.png is 16x12.*pass --image-size"):
        load_image_folder(tmp_path)
    pixels, manifest = load_image_folder(tmp_path, size=8)
    assert pixels.shape == (2, 3, 8, 8) and manifest["size"] == 8


def test_skimage_patches_are_seeded() -> None:
    kw = {"patch": 16, "per_image": 3, "resize": 64, "photos": ["astronaut", "camera"]}
    a, manifest = load_skimage_patches(seed=0, **kw)
    b, _ = load_skimage_patches(seed=0, **kw)
    c, _ = load_skimage_patches(seed=1, **kw)
    assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [crop["photo"] for crop in manifest["crops"]] == ["astronaut"] * 3 + ["camera"] * 3
    assert torch.equal(a[3, 0], a[3, 2])  # camera is grey, repeated to RGB
    with pytest.raises(ValueError, match="unknown skimage photo"):
        load_skimage_patches(photos=["eagle"])


def test_digits_and_split() -> None:
    pixels, labels = load_digits_images()
    assert pixels.shape == (1797, 3, 8, 8) and labels.shape == (1797,)
    assert float(pixels.max()) == 1.0 and float(pixels.min()) == 0.0
    split = split_images(pixels, n_train=32, n_eval=16, seed=0)
    assert split.train_pixels.shape == (32, 3, 8, 8) and split.eval_pixels.shape == (16, 3, 8, 8)
    assert not set(split.train_indices.tolist()) & set(split.eval_indices.tolist())
    assert torch.equal(split.train_pixels, pixels[split.train_indices])
    more = split_images(pixels, n_train=64, n_eval=16, seed=0)
    assert torch.equal(more.eval_indices, split.eval_indices)  # held-out set independent of n_train
    with pytest.raises(ValueError, match="exceeds the 1797 images"):
        split_images(pixels, n_train=1797, n_eval=1, seed=0)


# --- rendering ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "n_cols", "padding"), [(6, 3, 2), (4, 1, 0), (8, 4, 3)])
def test_tile_grid_lays_tiles_out_as_torchvision_make_grid(n, n_cols, padding) -> None:
    from torchvision.utils import make_grid

    tiles = torch.rand(n, 3, 5, 7, generator=torch.Generator().manual_seed(n))
    expected = make_grid(tiles, nrow=n_cols, padding=padding, pad_value=1.0)
    assert torch.equal(tile_grid(tiles, n_cols, padding=padding), expected)


def test_save_grid_and_masks(tmp_path, palette: PaletteTokenizer, images: torch.Tensor) -> None:
    codes = palette.encode_images(images[:2])
    context = mask_context(palette.decode_codes(codes), 64, palette.grid)
    assert torch.equal(context[:, :, :4], palette.decode_codes(codes)[:, :, :4])
    assert bool((context[:, :, 4:] == 0.5).all())
    rows = [[context[i], palette.decode_codes(codes)[i], images[i]] for i in range(2)]
    path = save_grid(rows, tmp_path / "grid.png", scale=4, padding=2)
    with Image.open(path) as im:
        assert im.size == (3 * (16 * 4 + 2) + 2, 2 * (16 * 4 + 2) + 2) and im.mode == "RGB"
    path = save_grid(rows, tmp_path / "grid.png", column_titles=["context", "completion", "original"])
    with Image.open(path) as im:
        assert im.size == (200, 134 + 14)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]

    # a VQ token covers a block of pixels: 5 tokens of a 4x4 grid = the first row of blocks plus one block
    masked = mask_context(torch.zeros(3, 16, 16), 5, (4, 4), fill=1.0)
    assert float(masked[0, :4].sum()) == 0 and float(masked[0, 4:8, :4].sum()) == 0
    assert bool((masked[0, 4:8, 4:] == 1).all())
    (pil,) = codes_to_pil(codes[0], palette, scale=2)
    assert pil.size == (32, 32)

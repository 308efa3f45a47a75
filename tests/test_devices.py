"""Tensors follow their inputs' device. Without a GPU here, a second device is simulated with "meta" tensors
(shape-only): any tensor made on the CPU and mixed with them raises, as a CPU tensor mixed with CUDA ones would."""

from __future__ import annotations

import torch

from hyperfit.image.metrics import longest_runs, timm_extractor


def test_longest_runs_follow_the_codes_device():
    codes = torch.tensor([[0, 1, 1, 1, 2, 2], [3, 3, 3, 3, 3, 0]])
    assert longest_runs(codes, n_context=1).tolist() == [3, 4]
    assert longest_runs(codes.to("meta"), n_context=1).device.type == "meta"  # raised before: a CPU counter


def test_the_fid_extractor_runs_on_its_own_device_and_returns_cpu_features():
    extract = timm_extractor("test_resnet", pretrained=False, input_size=32, device="cpu")
    features = extract(torch.rand(2, 3, 16, 16))
    assert features.device.type == "cpu" and features.shape[0] == 2


def test_an_fsdp_config_that_cannot_wrap_the_model_is_one_sentence():
    import pytest

    from hyperfit.common.runs import HyperfitError
    from hyperfit.common.shard import check_fsdp_wrap
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(97)
    check_fsdp_wrap(model, None)  # the model's own _no_split_modules: LlamaDecoderLayer
    check_fsdp_wrap(model, ["LlamaDecoderLayer"])
    with pytest.raises(
        HyperfitError, match="it has no GPT2Block layers.*its block class \\(LlamaDecoderLayer\\)"
    ):
        check_fsdp_wrap(model, ["GPT2Block"])
    with pytest.raises(HyperfitError, match="names no transformer block class"):
        check_fsdp_wrap(torch.nn.Sequential(torch.nn.Linear(2, 2)), None)
    with pytest.raises(HyperfitError, match="FSDP version 1"):
        check_fsdp_wrap(model, None, version=1)

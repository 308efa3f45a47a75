"""--report_to: accelerate's TensorBoard tracker gets every metrics.jsonl record; bad names stop before training."""

from __future__ import annotations

import struct

import pytest

from hyperfit.common.runs import read_jsonl
from hyperfit.common.tracking import tracker_values
from tests.test_fit_text import fit


def tensorboard_scalars(directory) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from the TensorBoard event files under ``directory`` (TFRecord framing: length,
    its CRC, the serialized Event, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in directory.rglob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_tracker_values_name_every_number_by_kind():
    record = {"kind": "eval", "epoch": 2, "step": 8, "ttr": 0.5, "source": "x", "flag": True}
    assert tracker_values(record) == {"eval/epoch": 2, "eval/ttr": 0.5}


def test_tensorboard_receives_every_logged_record(tiny_model_dir, news_file, tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    assert fit(tiny_model_dir, news_file, out, "--strategies", "", "--report_to", "tensorboard") == 0
    scalars = tensorboard_scalars(out / "tracking")
    records = read_jsonl(out / "metrics.jsonl")  # the record; the tracker is its mirror
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted(scalars["eval/ttr"]) == [r["step"] for r in evals]
    for r in evals:
        assert scalars["eval/ttr"][r["step"]] == pytest.approx(r["ttr"], rel=1e-6)
        assert scalars["eval/loss"][r["step"]] == pytest.approx(r["loss"], rel=1e-6)
    train = [r for r in records if r["kind"] == "train"]
    assert {r["step"]: pytest.approx(r["loss"], rel=1e-6) for r in train} == scalars["train/loss"]


def test_an_unknown_tracker_stops_the_run_before_training(tiny_model_dir, news_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert fit(tiny_model_dir, news_file, out, "--report_to", "nosuch") == 2
    err = capsys.readouterr().err
    assert "--report_to 'nosuch' is not a tracker accelerate knows" in err and "tensorboard" in err
    assert not (out / "metrics.jsonl").exists()

"""Experiment tracking through accelerate's trackers (``--report_to tensorboard``, ``wandb``, ``mlflow``, ...).

Off by default. ``metrics.jsonl`` stays the record of a run: every record written to it is also handed to the
trackers (``eval/ttr``, ``train/loss``, ``epoch/train_loss`` at the record's optimizer step), never the other way
round, so a tracker that is down or missing loses nothing. Trackers that keep local files write them into the run
directory's ``tracking/``.
"""

from __future__ import annotations

from typing import Any

from hyperfit.common.runs import HyperfitError, Run


def tracker_names(report_to: str) -> list[str]:
    """``--report_to`` as a list of tracker names; "" and "none" mean no tracker."""
    return [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]


def tracker_values(record: dict) -> dict[str, float]:
    """The numbers of one metrics.jsonl record, named ``<kind>/<key>`` (step and epoch are the axis, not values)."""
    kind = record.get("kind", "metrics")
    return {
        f"{kind}/{key}": value
        for key, value in record.items()
        if key not in ("kind", "step") and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _hparams(config: dict) -> dict[str, Any]:
    """Trackers take flat bool/int/float/str values: anything else is written as its text."""
    return {
        k: v if v is None or isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()
    }


def start_tracking(accelerator, run: Run, report_to: str, *, project: str, config: dict) -> None:
    """Start every tracker named in ``report_to`` on the main process and mirror ``run.log`` into them.

    Unknown names and trackers whose package is missing stop the run before training, with one sentence each.
    """
    names = tracker_names(report_to)
    if not names or not accelerator.is_main_process:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, filter_trackers

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise HyperfitError(
                f"--report_to {name!r} is not a tracker accelerate knows; choose from "
                f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}, or none."
            )
    available = {str(t) for t in filter_trackers(names, logging_dir=run.path / "tracking")}
    for name in names:
        if name not in available:
            package = "tensorboardX" if name == "tensorboard" else name.replace("_", "-")
            raise HyperfitError(f"--report_to {name} needs its package; pip install {package}, or drop it.")
    for name in names:
        tracker_class = LOGGER_TYPE_TO_CLASS[name]
        if tracker_class.requires_logging_directory:
            tracker = tracker_class(project, str(run.path / "tracking"))
        else:
            tracker = tracker_class(project)
        tracker.start()
        tracker.store_init_configuration(_hparams(config))
        accelerator.trackers.append(tracker)
    run.mirror = lambda record: accelerator.log(tracker_values(record), step=record.get("step"))


def stop_tracking(accelerator, run: Run) -> None:
    """Finish every tracker (flush and close); the run keeps writing metrics.jsonl only."""
    run.mirror = None
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()

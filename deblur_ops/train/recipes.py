"""Training recipes: ``deblur train <name>`` runs ``recipes[name].run(options)``.

A recipe builds its model, data and optimizers from :class:`TrainOptions`, trains with
:func:`deblur_ops.train.loop.fit`, writes the weights with
:func:`deblur_ops.models.save_pretrained` to ``options.out`` (``--install`` puts them where
``load_pretrained`` finds them) and returns the info stored with the weights.
"""
from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class TrainOptions:
    """What ``deblur train`` passes to a recipe; ``None`` means the recipe's own default.

    Attributes:
        steps, batch_size, patch, lr: training length, samples per step, patch side, learning rate.
        seed: seeds the data stream and the initialisation.
        out: weight file to write.
        checkpoint: checkpoint file (resumable), or None.
        resume: continue from ``checkpoint``.
        device: torch device string.
        images: folder of training images, or None for the built-in offline images.
        progress: show a progress bar.
        validate_every: steps between validations.
        extra: recipe-specific ``--set key=value`` overrides (e.g. model widths).
    """

    steps: int | None = None
    batch_size: int | None = None
    patch: int | None = None
    lr: float | None = None
    seed: int = 0
    out: Path = Path("model.pt")
    checkpoint: Path | None = None
    resume: bool = False
    device: str = "cpu"
    images: str | None = None
    progress: bool = True
    validate_every: int | None = None
    extra: dict = field(default_factory=dict)

    def get(self, name: str, default):
        """``getattr(self, name)`` unless None, else ``default``."""
        value = getattr(self, name)
        return default if value is None else value

    def pop_extra(self, defaults: dict) -> dict:
        """``defaults`` updated with ``extra`` (converted to each default's type); unknown keys are an error."""
        unknown = sorted(set(self.extra) - set(defaults))
        if unknown:
            raise ValueError(f"unknown --set option(s) {unknown}; this recipe takes {sorted(defaults)}")
        merged = dict(defaults)
        for key, value in self.extra.items():
            kind = type(defaults[key])
            try:
                merged[key] = value if defaults[key] is None or isinstance(value, kind) else kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"--set {key}={value!r}: expected a {kind.__name__}") from None
        return merged


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    run: Callable[[TrainOptions], dict]


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, description: str, run: Callable[[TrainOptions], dict]) -> None:
    """Make ``deblur train <name>`` run ``run(options)``.

    Raises:
        ValueError: the name is taken.
    """
    if name in RECIPES:
        raise ValueError(f"a training recipe named {name!r} exists already")
    RECIPES[name] = Recipe(name, description, run)


def device_name(device) -> str:
    """Human-readable name of a torch device, for the training info."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)"


def training_info(options: TrainOptions, history: dict, data: dict, **more) -> dict:
    """The ``info`` stored with a weight file: data, steps, batch, time, device, and the validation
    of the weights kept (the best one with ``keep_best``, else the last)."""
    chosen = [v for v in history["validation"] if v["step"] == history.get("best_step")]
    last = chosen[-1] if chosen else (history["validation"][-1] if history["validation"] else {})
    return {"steps": history["steps"], "batch_size": history["batch_size"], "seconds": round(history["seconds"], 1),
            "device": device_name(options.device), "torch": torch.__version__, "seed": options.seed,
            "data": data, "validation_psnr": last.get("psnr"), "validation_input_psnr": last.get("input_psnr"),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "validation_history": history["validation"], **more}

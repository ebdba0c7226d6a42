"""Shipped trained weights: a registry name -> (model builder, weight file), loaded offline.

A weight file is a ``torch.save`` dict ``{"format": 1, "name", "config", "state_dict", "info"}``:
``config`` holds the keyword arguments that rebuild the module (``builder(**config)``), ``info``
says how the weights were trained (data, steps, time, device, validation PSNR). Files shipped with
the package live in ``deblur_ops/models/weights/<name>.pt``; nothing is ever downloaded.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = 1


@dataclass(frozen=True)
class Pretrained:
    """A registered pretrained model: ``builder(**config)`` makes the module for ``weights/<name>.pt``."""

    name: str
    builder: Callable[..., nn.Module]
    description: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"


PRETRAINED: dict[str, Pretrained] = {}


def register_pretrained(name: str, builder: Callable[..., nn.Module], description: str) -> None:
    """Register the weight file ``weights/<name>.pt`` and the builder of its module.

    Args:
        name: registry name, e.g. ``"irc-motion"``.
        builder: class or function; ``builder(**config)`` rebuilds the trained module.
        description: one line for listings.

    Raises:
        ValueError: the name is taken, or the description is not one line.
    """
    if not isinstance(name, str) or not name or name in PRETRAINED:
        raise ValueError(f"pretrained name must be a new non-empty string, got {name!r} "
                         f"(taken: {sorted(PRETRAINED)})")
    if not isinstance(description, str) or "\n" in description or not description.strip():
        raise ValueError(f"description must be one non-empty line, got {description!r}")
    PRETRAINED[name] = Pretrained(name, builder, description)


def pretrained_models() -> dict[str, str]:
    """Registered pretrained models, name -> description (``[not shipped]`` when the file is missing).

    Example:
        >>> import deblur_ops.models as m
        >>> "irc-motion" in m.pretrained_models()
        True
    """
    return {name: p.description + ("" if p.path.exists() else " [not shipped]")
            for name, p in sorted(PRETRAINED.items())}


def _plain(value):
    """Config/info values as plain Python (tuples -> lists) so that weights_only loading accepts them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch.__version__
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise TypeError(f"config and info must hold numbers, strings, lists and dicts, got {type(value).__name__}")


def save_pretrained(model: nn.Module, path, *, config: dict, info: dict, name: str | None = None,
                    half: bool = False) -> Path:
    """Write ``model``'s weights with the config that rebuilds it and how it was trained.

    Args:
        model: the trained module.
        path: file to write (parents are created).
        config: keyword arguments of the builder that recreate ``model``'s architecture.
        info: how the weights were made (data, steps, seconds, device, validation PSNR, ...).
        name: the registry name it is meant for (default: the file's stem).
        half: store floating tensors as float16 (half the size; loaded back as float32).

    Returns:
        The path written.

    Example:
        >>> import tempfile, torch
        >>> f = save_pretrained(torch.nn.Linear(2, 1), tempfile.mkdtemp() + "/lin.pt",
        ...                     config={"in_features": 2, "out_features": 1}, info={"steps": 0})
        >>> load_weights(f, torch.nn.Linear).weight.shape
        torch.Size([1, 2])
    """
    state = {k: (t.detach().half() if half and t.is_floating_point() else t.detach()).cpu().clone()
             for k, t in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "name": name or path.stem, "config": _plain(config),
                "state_dict": state, "info": _plain(info)}, path)
    return path


def read_weights(path) -> dict:
    """The dict stored by :func:`save_pretrained` (tensors on the CPU), checked for its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}; train one with `deblur train` or check the path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} holds objects other than tensors, numbers and strings; refusing to unpickle it "
                         f"({str(exc).splitlines()[0]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise ValueError(f"{path} is not a deblur-ops weight file (format {FORMAT}); "
                         f"write it with deblur_ops.models.save_pretrained")
    return blob


def load_weights(path, builder: Callable[..., nn.Module], *, device="cpu") -> nn.Module:
    """Rebuild ``builder(**config)`` from a weight file and load its state, in eval mode, float32."""
    blob = read_weights(path)
    model = builder(**blob["config"])
    state = {k: (t.float() if t.is_floating_point() else t) for k, t in blob["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    model.trained_info = blob["info"]
    return model.to(device).eval()


def load_pretrained(name: str, *, device="cpu") -> nn.Module:
    """The shipped trained model ``name`` (see :func:`pretrained_models`), in eval mode.

    Args:
        name: registry name, e.g. ``"irc-motion"``, ``"motion-net"``, ``"blind-irc"``.
        device: where to put it.

    Returns:
        The module, float32, ``.eval()``; ``module.trained_info`` says how it was trained.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        FileNotFoundError: the weight file is not in this installation.

    Example:
        >>> import deblur_ops.models as m
        >>> net = m.load_pretrained("motion-net")
        >>> net.training
        False
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}")
    entry = PRETRAINED[name]
    return load_weights(entry.path, entry.builder, device=device)


def resolve_weights(weights, builder: Callable[..., nn.Module], *, device, cached: Callable, recipe: str) -> nn.Module:
    """The model for a method's ``weights=`` argument: a registry name (loaded once, through
    ``cached(name, device)``) or a weight file written by ``deblur train <recipe>``.

    Raises:
        ValueError: neither a registered name nor an existing file.
    """
    if weights in PRETRAINED:
        return cached(weights, device)
    if not Path(str(weights)).is_file():
        raise ValueError(f"weights must be a registered name ({sorted(PRETRAINED)}) or a weight file written by "
                         f"`deblur train {recipe}`, got {weights!r}")
    return load_weights(weights, builder, device=device)

"""The training loop every model shares: steps, validation PSNR, checkpoints, resume, progress.

The model-specific part is a ``train_step(batch) -> float`` closure that does one optimisation
step (so a GAN with two optimizers fits as well as a plain regression), and a
``predict(batch) -> Tensor`` for validation. :func:`supervised_step` builds the common
train_step: forward, loss, backward, optional gradient clipping, optimizer step.
"""
from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .datasets import psnr_batch, to_device


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, forward: Callable[[dict], torch.Tensor],
                    loss: Callable[[torch.Tensor, dict], torch.Tensor], *, grad_clip: float | None = None
                    ) -> Callable[[dict], float]:
    """``train_step(batch)``: ``loss(forward(batch), batch)``, backward, clip, step; returns the loss.

    Args:
        model: the module whose parameters are clipped (the optimizer holds what is updated).
        optimizer: the optimizer.
        forward: ``forward(batch) -> estimate``.
        loss: ``loss(estimate, batch) -> scalar``.
        grad_clip: max global gradient norm, or None.

    Example:
        >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> step = supervised_step(net, opt, lambda b: net(b["blurry"]),
        ...                        lambda out, b: ((out - b["sharp"]) ** 2).mean())
        >>> batch = {"blurry": torch.ones(1, 1, 4, 4), "sharp": torch.zeros(1, 1, 4, 4)}
        >>> isinstance(step(batch), float)
        True
    """
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {grad_clip!r}")

    def train_step(batch: dict) -> float:
        optimizer.zero_grad(set_to_none=True)
        value = loss(forward(batch), batch)
        if not torch.isfinite(value):
            raise FloatingPointError(f"training loss became {float(value)}; lower the learning rate")
        value.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return float(value.detach())

    return train_step


def validate(model: nn.Module, predict: Callable[[dict], torch.Tensor] | None, batches: Sequence[dict],
             score: Callable[[dict], dict] | None = None) -> dict:
    """Mean PSNR of ``predict`` and of the blurred input over fixed validation batches, or the mean
    of ``score(batch)``'s values when ``predict`` is None (models that do not output images)."""
    was_training = model.training
    model.eval()
    scores, inputs, losses = [], [], []
    with torch.no_grad():
        if predict is None:
            rows = [score(batch) for batch in batches]
            model.train(was_training)
            return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
        for batch in batches:
            estimate = predict(batch)
            scores.append(psnr_batch(estimate, batch["sharp"]))
            inputs.append(psnr_batch(batch["blurry"], batch["sharp"]))
            losses.append(float(((estimate - batch["sharp"]) ** 2).mean()))
    model.train(was_training)
    return {"psnr": float(torch.cat(scores).mean()), "input_psnr": float(torch.cat(inputs).mean()),
            "mse": sum(losses) / len(losses)}


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fit(model: nn.Module, train_step: Callable[[dict], float], predict: Callable[[dict], torch.Tensor] | None,
        train_data, val_data=None, *, steps: int, batch_size: int, optimizers: Sequence[torch.optim.Optimizer],
        schedulers: Sequence = (), validate_every: int = 50, val_batches: int = 2, checkpoint=None,
        resume: bool = False, seed: int = 0, progress: bool = True, device="cpu",
        log: Callable[[str], None] | None = None, score: Callable[[dict], dict] | None = None,
        keep_best: bool = False) -> dict:
    """Train for ``steps`` steps, validating every ``validate_every`` steps and at the end.

    Args:
        model: the module (moved to ``device``; left in train mode while training).
        train_step: ``train_step(batch) -> loss`` doing one optimisation step.
        predict: ``predict(batch) -> (B, C, P, P)`` estimate, run under ``no_grad`` for validation;
            None to validate with ``score`` instead.
        train_data: a :class:`~deblur_ops.train.datasets.SyntheticBlur` (anything with ``batch(n)``,
            ``state_dict()``, ``load_state_dict()``).
        val_data: the validation stream; its first ``val_batches`` batches are drawn once and
            reused, so validation PSNRs are comparable across steps and runs.
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size: samples per step.
        optimizers: every optimizer (saved in checkpoints).
        schedulers: LR schedulers: ``ReduceLROnPlateau`` steps on the validation MSE, others every step.
        validate_every: steps between validations (also checkpoints).
        val_batches: number of validation batches.
        checkpoint: file for checkpoints (model, optimizers, schedulers, data stream, history), or None.
        resume: continue from ``checkpoint`` if it exists.
        seed: seeds torch's global generator (dropout, initialisation done inside train_step).
        progress: show a tqdm progress bar.
        device: where batches go.
        log: called with one line per validation (default: tqdm.write).
        score: ``score(batch) -> {name: float}`` validation metrics when ``predict`` is None
            (e.g. a motion error); the ``"mse"`` key, if any, drives ``ReduceLROnPlateau``.
        keep_best: end with the weights of the best validation (highest PSNR, or lowest first
            ``score`` value) instead of the last step's; ``history["best_step"]`` says which.

    Returns:
        history: ``{"loss": [...], "validation": [{"step", "psnr", "input_psnr", "mse"}, ...],
        "steps", "seconds", "device", "batch_size"}``; ``seconds`` counts this run's training and
        validation time plus that of the resumed run.
    """
    steps = _check_int(steps, "steps", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    validate_every = _check_int(validate_every, "validate_every", 1)
    val_batches = _check_int(val_batches, "val_batches", 1)
    torch.manual_seed(seed)
    model.to(device).train()
    history = {"loss": [], "validation": [], "steps": 0, "seconds": 0.0, "device": str(device),
               "batch_size": batch_size}
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        try:
            # weights_only: a checkpoint is data (tensors, numbers, lists, dicts); unpickling
            # arbitrary objects would run whatever code a crafted file names.
            state = torch.load(checkpoint, map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{checkpoint} is not a checkpoint that loads as plain tensors and numbers; "
                             f"refusing to unpickle it ({str(exc).splitlines()[0]}). Start without --resume "
                             f"or delete the file") from None
        model.load_state_dict(state["model"])
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        for sched, s in zip(schedulers, state["schedulers"]):
            sched.load_state_dict(s)
        train_data.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"])
        history = state["history"]
    fixed = [to_device(val_data.batch(batch_size), device) for _ in range(val_batches)] if val_data else []

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=history["steps"], disable=not progress, desc="train", unit="step")
    write = log or tqdm.write

    def save_checkpoint():
        if checkpoint is None:
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(checkpoint.suffix + ".tmp")
        torch.save({"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                    "schedulers": [s.state_dict() for s in schedulers], "data": train_data.state_dict(),
                    "rng": torch.get_rng_state(), "history": history}, tmp)
        tmp.replace(checkpoint)  # never leave a half-written checkpoint

    best = {}

    def run_validation():
        if not fixed:
            return
        result = {"step": history["steps"], **validate(model, predict, fixed, score)}
        history["validation"].append(result)
        value = result["psnr"] if "psnr" in result else -next(v for k, v in result.items() if k != "step")
        if keep_best and ("value" not in best or value > best["value"]):
            best.update(value=value, step=result["step"],
                        state={k: t.detach().clone() for k, t in model.state_dict().items()})
        for sched in schedulers:
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and "mse" in result:
                sched.step(result["mse"])
        if "psnr" in result:
            write(f"step {result['step']}: validation PSNR {result['psnr']:.2f} dB "
                  f"(blurred input {result['input_psnr']:.2f} dB)")
        else:
            write(f"step {result['step']}: validation " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                                                     if k != "step"))

    start = time.perf_counter() - history["seconds"]
    if history["steps"] == 0:
        run_validation()  # the untrained model's score, for comparison
    while history["steps"] < steps:
        batch = to_device(train_data.batch(batch_size), device)
        loss = train_step(batch)
        history["loss"].append(loss)
        history["steps"] += 1
        for sched in schedulers:
            if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}")
        if history["steps"] % validate_every == 0 or history["steps"] == steps:
            run_validation()
            history["seconds"] = time.perf_counter() - start
            save_checkpoint()
    bar.close()
    history["seconds"] = time.perf_counter() - start
    if keep_best and best:
        # A resumed run only knows the validations it ran itself; earlier ones are in the history.
        model.load_state_dict(best["state"])
        history["best_step"] = best["step"]
        write(f"kept the weights of step {best['step']} (best validation)")
    return history

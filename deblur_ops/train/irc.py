"""Training recipes of paper 004: ``deblur train irc | motion | blind``.

- ``irc``: IRC-Net (grid x update) fine-tuned on uniform linear motions of the bank's grid and
  camera-motion fields in turn; ``--set inverse=bank data=linear`` is paper 004 §4.2's set-up (each
  sample's exact grid motion selects one inverse filter, which is what its correction learns).
- ``motion``: Motion-Net regressed on smooth non-uniform camera-motion fields (§4.1).
- ``blind``: Motion-Net -> IRC-Net fine-tuned end to end on camera-motion fields (§3.3, eq. 18),
  started from the ``motion`` and ``irc`` weights given with ``--set motion_weights=... irc_weights=...``
  (default: the shipped ones).
"""
from __future__ import annotations

import torch

from ..models.blind_irc import BlindIRC
from ..models.irc_net import IRCNet
from ..models.motion_net import MotionNet, direction_to_angle, motion_loss, motion_mse
from ..models.pretrained import PRETRAINED, load_weights, save_pretrained
from .datasets import Mixed, SyntheticBlur
from .loop import fit, supervised_step
from .recipes import TrainOptions, training_info


def _data(options: TrainOptions, kind: str, patch: int, cfg: dict) -> tuple[SyntheticBlur, SyntheticBlur, dict]:
    common = dict(patch=patch, psf_size=cfg["psf_size"], max_length=cfg["train_max_length"],
                  noise=(cfg["noise_low"], cfg["noise_high"]), images=options.images, forward=cfg["forward"])
    train, val = SyntheticBlur.splits(kind, seed=options.seed, **common)
    described = {"kind": kind, "patch": patch, "max_length": cfg["train_max_length"],
                 "field_forward_model": cfg["forward"],
                 "noise_sigma": [cfg["noise_low"], cfg["noise_high"]],
                 "images": options.images or "built-in offline skimage images (training split)"}
    return train, val, described


def _fit(options: TrainOptions, model, step, predict, train, val, optimizer, *, steps: int, batch_size: int,
         validate_every: int, **more) -> dict:
    """fit() with the options' steps, batch, checkpoint, device; keeps the best validated weights."""
    return fit(model, step, predict, train, val, steps=options.get("steps", steps),
               batch_size=options.get("batch_size", batch_size), optimizers=[optimizer],
               validate_every=options.get("validate_every", validate_every), checkpoint=options.checkpoint,
               resume=options.resume, seed=options.seed, progress=options.progress, device=options.device,
               keep_best=True, **more)


def _log_mse(out: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean over the batch of log10 of each patch's MSE: -PSNR / 10, so every patch counts by its
    PSNR; with the plain MSE, textured patches (high error) outweigh smooth ones (low error)."""
    return ((out - batch["sharp"]) ** 2).flatten(1).mean(1).clamp(min=1e-10).log10().mean()


IRC_LOSSES = {"l2": lambda out, b: ((out - b["sharp"]) ** 2).mean(), "psnr": _log_mse}


def train_irc(options: TrainOptions) -> dict:
    """Fine-tune IRC-Net; L2 loss, Adam.

    Defaults (those of the shipped ``irc-motion``'s runs, the last of which adds ``--set data=field``):
    the grid x update of ``irc`` (12 stages, one IRC step each, learned momentum) with 6 zero-sum
    prior filters, on 96 px patches alternating uniform grid motions and camera-motion fields
    (``data=mixed``) of up to 25 px.
    ``--set inverse=bank data=linear stages=5 inner_steps=2 prior_filters=2`` is the paper's set-up:
    uniform grid motions, learning the centres of the bank's inverse filters too (eq. 17).
    ``--set loss=psnr`` minimises the patches' mean log MSE (their mean PSNR) instead of their MSE.
    Camera-motion fields are blurred with each pixel's own line (``--set forward=exact``, default) or,
    as before 2026-12, through the solver's own bank (``--set forward=bank``, the inverse crime).
    """
    cfg = options.pop_extra({"stages": 12, "inner_steps": 1, "max_length": 35, "delta_size": None,
                             "train_max_length": 25, "psf_size": 35, "noise_low": 0.005, "noise_high": 0.02,
                             "delta_lr_scale": 0.1, "init": "", "inverse": "grid", "data": "mixed",
                             "prior_filters": 6, "loss": "l2", "forward": "exact"})
    if cfg["data"] not in ("linear", "field", "mixed"):
        raise ValueError(f"data must be linear, field or mixed, got {cfg['data']!r}")
    if cfg["loss"] not in IRC_LOSSES:
        raise ValueError(f"loss must be one of {tuple(IRC_LOSSES)} (--set loss=l2 or psnr), got {cfg['loss']!r}")
    torch.manual_seed(options.seed)
    if cfg["init"]:  # continue from earlier weights (their architecture wins over the size options)
        model = load_weights(cfg["init"], IRCNet).train()
    else:
        model = IRCNet(stages=cfg["stages"], inner_steps=cfg["inner_steps"], max_length=cfg["max_length"],
                       delta_size=cfg["delta_size"], inverse=cfg["inverse"], prior_filters=cfg["prior_filters"])
    patch = options.get("patch", 96)
    if cfg["data"] == "mixed":
        parts = [_data(options, kind, patch, cfg) for kind in ("linear", "field")]
        train, val = Mixed([p[0] for p in parts]), Mixed([p[1] for p in parts])
        described = {**parts[0][2], "kind": "linear and field, alternating batches"}
    else:
        train, val, described = _data(options, cfg["data"], patch, cfg)
    lr = options.get("lr", 1e-3)
    if model.inverse == "bank":
        others = [p for n, p in model.named_parameters() if n != "inverse_delta"]
        optimizer = torch.optim.Adam([{"params": others, "lr": lr},
                                      {"params": [model.inverse_delta], "lr": lr * cfg["delta_lr_scale"]}])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def forward(batch):
        return model(batch["blurry"], motion=(batch["length"], batch["angle"]))

    step = supervised_step(model, optimizer, forward, IRC_LOSSES[cfg["loss"]])
    history = _fit(options, model, step, forward, train, val, optimizer, steps=400, batch_size=4, validate_every=50)
    info = training_info(options, history, described, lr=lr, loss=cfg["loss"], optimizer="Adam",
                         best_step=history.get("best_step"), started_from=str(cfg["init"]) or "analytic filters",
                         earlier_training=getattr(model, "trained_info", None))
    save_pretrained(model, options.out, config=model.config(), info=info, name="irc-motion")
    return info


def train_motion(options: TrainOptions) -> dict:
    """Train Motion-Net on camera-motion fields; loss :func:`motion_loss`, Adam.

    The loss is per pixel (``forward``); ``--set smoothing=N`` (default 17, 0 for none) is stored
    with the weights and smooths what :meth:`MotionNet.motion` returns; ``--set init=FILE``
    continues from earlier Motion-Net weights.
    """
    cfg = options.pop_extra({"width": 24, "blocks": 2, "max_length": 35.0, "train_max_length": 35,
                             "psf_size": 35, "noise_low": 0.005, "noise_high": 0.02, "smoothing": 17,
                             "forward": "exact", "init": ""})
    torch.manual_seed(options.seed)
    if cfg["init"]:  # continue from earlier weights (their architecture and smoothing win over the options)
        model = load_weights(cfg["init"], MotionNet).train()
    else:
        model = MotionNet(width=cfg["width"], max_length=cfg["max_length"], blocks=cfg["blocks"],
                          smoothing=cfg["smoothing"])
    train, val, described = _data(options, "field", options.get("patch", 96), cfg)
    lr = options.get("lr", 1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = options.get("steps", 600)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def train_step(batch):
        optimizer.zero_grad(set_to_none=True)
        length, direction = model(batch["blurry"])
        loss = motion_loss(length, direction, batch["length"], batch["angle"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return float(loss.detach())

    def score(batch):
        length, direction = model(batch["blurry"])
        angle = direction_to_angle(direction)
        return {"motion_mse": float(motion_mse(length, angle, batch["length"], batch["angle"]).mean()),
                "loss": float(motion_loss(length, direction, batch["length"], batch["angle"]))}

    history = _fit(options, model, train_step, None, train, val, optimizer, steps=steps, batch_size=4,
                   validate_every=100, score=score, schedulers=[scheduler])
    info = training_info(options, history, described, lr=lr, loss="motion_loss", optimizer="Adam, cosine LR",
                         best_step=history.get("best_step"), started_from=str(cfg["init"]) or "random",
                         validation_motion_mse=min(v["motion_mse"] for v in history["validation"]))
    save_pretrained(model, options.out, config=model.config(), info=info, name="motion-net")
    return info


def train_blind(options: TrainOptions) -> dict:
    """Fine-tune Motion-Net + IRC-Net end to end on camera-motion fields; L2 loss, Adam."""
    cfg = options.pop_extra({"motion_weights": "", "irc_weights": "", "train_max_length": 35, "psf_size": 35,
                             "noise_low": 0.005, "noise_high": 0.02, "motion_lr_scale": 0.1,
                             "forward": "exact"})
    motion = load_weights(cfg["motion_weights"] or PRETRAINED["motion-net"].path, MotionNet)
    irc = load_weights(cfg["irc_weights"] or PRETRAINED["irc-motion"].path, IRCNet)
    model = BlindIRC.from_parts(motion, irc).train()
    train, val, described = _data(options, "field", options.get("patch", 64), cfg)
    lr = options.get("lr", 1e-4)
    optimizer = torch.optim.Adam([{"params": model.irc.parameters(), "lr": lr},
                                  {"params": model.motion_net.parameters(), "lr": lr * cfg["motion_lr_scale"]}])

    def forward(batch):
        return model(batch["blurry"])

    step = supervised_step(model, optimizer, forward, lambda out, b: ((out - b["sharp"]) ** 2).mean(), grad_clip=1.0)
    history = _fit(options, model, step, forward, train, val, optimizer, steps=100, batch_size=2, validate_every=25)
    info = training_info(options, history, described, lr=lr, loss="l2", optimizer="Adam",
                         best_step=history.get("best_step"), started_from={"motion": str(cfg["motion_weights"] or "shipped motion-net"),
                                       "irc": str(cfg["irc_weights"] or "shipped irc-motion")})
    save_pretrained(model, options.out, config=model.config(), info=info, name="blind-irc")
    return info

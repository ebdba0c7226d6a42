"""Training of paper 002's autoencoder: ``deblur train autoencoder``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.autoencoder import PRETRAINED_NAME, DeblurAutoencoder
from ..models.pretrained import save_pretrained
from ._blind import blind_data, int_tuple, validation_batches
from .loop import fit, supervised_step
from .recipes import TrainOptions, training_info


RECIPE_DEFAULTS = {"filters": "32,64,128", "latent_channels": 64, "kernel_size": 3, "residual": True,
                   "max_length": 21.0, "noise_low": 0.003, "noise_high": 0.015, "plateau_factor": 0.1 ** 0.5,
                   "plateau_patience": 2, "half": False, "data": "uniform", "pool": 0}


def train_autoencoder(options: TrainOptions) -> dict:
    """``deblur train autoencoder``: MSE loss, Adam, ReduceLROnPlateau on the validation MSE (paper 002 Sec. IV-B).

    ``--set`` options: ``filters`` ("32,64,128"), ``latent_channels``, ``kernel_size``,
    ``residual``, ``max_length``, ``noise_low``/``noise_high``, ``data`` (``uniform`` or ``shake``: spatially
    varying camera shake by the exact trajectory model), ``pool`` (pairs made once and reused, for ``data=shake``), ``plateau_factor``,
    ``plateau_patience`` (in validations), ``half`` (store float16).
    """
    cfg = options.pop_extra(dict(RECIPE_DEFAULTS))
    filters = int_tuple(cfg["filters"], "filters")
    torch.manual_seed(options.seed)
    model = DeblurAutoencoder(1, filters, cfg["kernel_size"], cfg["latent_channels"], cfg["residual"])
    patch = options.get("patch", 64)
    if patch % model.multiple:
        raise ValueError(f"patch must be a multiple of {model.multiple} for filters {filters}, got {patch}")
    train, val, described = blind_data(options, patch, cfg)
    lr = options.get("lr", 1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg["plateau_factor"],
                                                         patience=cfg["plateau_patience"], min_lr=0.5e-6)

    def forward(batch):
        return model(batch["blurry"])

    step = supervised_step(model, optimizer, forward, lambda out, b: F.mse_loss(out, b["sharp"]))
    batch_size = options.get("batch_size", 16)
    history = fit(model, step, forward, train, val, steps=options.get("steps", 2400), batch_size=batch_size,
                  optimizers=[optimizer], schedulers=[plateau], validate_every=options.get("validate_every", 100),
                  val_batches=validation_batches(batch_size), checkpoint=options.checkpoint, resume=options.resume,
                  seed=options.seed, progress=options.progress, device=options.device, keep_best=True)
    info = training_info(options, history, described, lr=lr, loss="mse", optimizer="Adam",
                         scheduler=f"ReduceLROnPlateau(factor={cfg['plateau_factor']:.3g}, "
                                   f"patience={cfg['plateau_patience']} validations)",
                         best_step=history.get("best_step"), float16=cfg["half"])
    save_pretrained(model, options.out, config=model.config(), info=info, name=PRETRAINED_NAME, half=cfg["half"])
    return info

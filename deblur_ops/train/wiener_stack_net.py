"""Training of paper 001's Wiener-stack network: ``deblur train wiener-stack-net``.

The network (:class:`deblur_ops.models.WienerStackNet`) learns on synthetic uniform blur with the
SSIM loss of :mod:`.losses`; :func:`dataset_snr_db` measures the training data's average SNR, which
sets the paper's baseline (``"wiener-bilateral"``, scored on the same validation patches).
"""
from __future__ import annotations

import torch

from ..models.pretrained import save_pretrained
from ..models.wiener_stack_net import WienerStackNet
from ..restore.baselines import wiener_bilateral
from .datasets import SyntheticBlur, psnr_batch
from .loop import fit, supervised_step
from .losses import image_loss
from .recipes import training_info


def dataset_snr_db(data, samples: int = 4096, batch: int = 64) -> float:
    """Mean over ``samples`` training patches of 10 log10(var(k * x) / sigma^2), in dB.

    The signal power of a patch is that of its noise-free blurred image, estimated as
    ``var(blurry) - sigma^2`` (the noise is independent of the image); this is the "average SNR of
    all images in our dataset" that sets paper 001's baseline Wiener filter.

    Args:
        data: a :class:`deblur_ops.train.datasets.SyntheticBlur` (its stream advances).
        samples: number of patches.
        batch: patches drawn at a time.

    Returns:
        The mean SNR in dB.
    """
    values = []
    while len(values) * batch < samples:
        b = data.batch(batch)
        sigma2 = b["sigma"].double() ** 2
        signal = (b["blurry"].double().flatten(1).var(1) - sigma2).clamp_min(1e-12)
        values.append(10 * torch.log10(signal / sigma2))
    return float(torch.cat(values)[:samples].mean())


def train_wiener_stack_net(options) -> dict:
    """Recipe ``deblur train wiener-stack-net``: grey WienerStackNet on :class:`SyntheticBlur` uniform PSFs.

    Defaults (override with the CLI flags and ``--set key=value``): Adam, lr 1e-3 with cosine decay
    to 1e-4, 1200 steps of 8 patches of 64 x 64, noise sigma 0.3-1.5 %, PSFs up to 27 px long in
    29 x 29; ``--set`` keys: width (32), blocks (5), kernel_size (5), loss ("ssim" as the paper,
    or "l2"), residual_snr_db (17; 0 for the paper's plain output), bilateral (0; 1 adds the
    output filter), psf_size, max_length, val_batches. After training it scores the paper's
    baseline (:func:`wiener_bilateral` at the measured dataset-average SNR) on the same
    validation patches and stores everything in the weight file's info.

    Args:
        options: :class:`deblur_ops.train.TrainOptions`.

    Returns:
        The info dict stored with the weights.
    """
    cfg = options.pop_extra({"width": 32, "blocks": 5, "kernel_size": 5, "loss": "ssim", "residual_snr_db": 17.0,
                             "bilateral": 0, "psf_size": 29, "max_length": 27.0, "val_batches": 4})
    steps, batch_size = options.get("steps", 1200), options.get("batch_size", 8)
    patch, lr = options.get("patch", 64), options.get("lr", 1e-3)
    data_options = {"psf": "uniform", "patch": patch, "psf_size": cfg["psf_size"], "channels": 1,
                    "noise": (0.003, 0.015), "max_length": cfg["max_length"], "images": options.images}
    train_data, val_data = SyntheticBlur.splits(**data_options, seed=options.seed)
    snr = dataset_snr_db(SyntheticBlur(**data_options, seed=options.seed + 1, split="train"))
    torch.manual_seed(options.seed)
    model = WienerStackNet(channels=1, width=cfg["width"], blocks=cfg["blocks"], kernel_size=cfg["kernel_size"],
                           residual_snr_db=cfg["residual_snr_db"] or None, bilateral=bool(cfg["bilateral"]))
    model.to(options.device)
    loss = image_loss(cfg["loss"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)

    def predict(batch):
        return model(batch["blurry"], batch["psf"])

    history = fit(model, supervised_step(model, optimizer, predict, lambda out, b: loss(out, b["sharp"])),
                  predict, train_data, val_data, steps=steps, batch_size=batch_size, optimizers=[optimizer],
                  schedulers=[scheduler], validate_every=options.get("validate_every", 250),
                  val_batches=cfg["val_batches"], checkpoint=options.checkpoint, resume=options.resume,
                  seed=options.seed, progress=options.progress, device=options.device)
    # The same validation patches fit scored (same split and seed), now for the paper's baseline.
    replay = SyntheticBlur(**data_options, seed=options.seed, split="val")
    baseline = []
    with torch.no_grad():
        for _ in range(cfg["val_batches"]):
            b = replay.batch(batch_size)
            baseline.append(psnr_batch(wiener_bilateral(b["blurry"], b["psf"], snr_db=snr), b["sharp"]))
    described = {**data_options, "noise": list(data_options["noise"]),
                 "images": "built-in offline skimage images (training split)" if options.images is None
                 else str(options.images)}
    info = training_info(options, history, described,
                         loss=cfg["loss"], lr=lr, schedule="cosine to lr/10", patch=patch, dataset_snr_db=snr,
                         validation_baseline_psnr=float(torch.cat(baseline).mean()),
                         baseline="wiener-bilateral at dataset_snr_db")
    save_pretrained(model.cpu(), options.out, config=model.config(), info=info, name="wiener-stack-net")
    return info

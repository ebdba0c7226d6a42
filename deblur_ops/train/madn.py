"""Training of paper 003's MADN: the losses (Sec. 4, eqs. 10-20), the alternating G / D step
(Algorithm 1) and ``deblur train madn``.

L_G = alpha L_pixel + phi1 L_content^GB + phi2 L_content^G + lambda L_adv (eqs. 10-17) and
L_d = L_d^G + L_d^GB (eqs. 18-20), on the networks of :mod:`deblur_ops.models.madn`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models.madn import (PRETRAINED_NAME, MADN, MADNDiscriminator, MADNOutputs, image_pyramid,
                           sobel_gradient_map)
from ..models.pretrained import save_pretrained
from ._blind import blind_data, int_tuple, validation_batches
from .loop import fit
from .recipes import TrainOptions, training_info


@dataclass(frozen=True)
class MADNLossWeights:
    """Weights of the MADN losses (paper 003 Sec. 4 and 5.1).

    Attributes:
        adversarial: lambda of eq. 10.
        pixel: alpha of eq. 11.
        gradient_content: phi_1 of eq. 13 (GN's reconstructed gradient map).
        image_content: phi_2 of eq. 13 (final image and its gradient map).
        gradient_l1: beta_1 of eq. 13 (gradient map of the final image).
        image_l1: beta_2 of eq. 13 (final image).
        scale_weights: w^i of eq. 12 for the scales x0.25, x0.5, x1 (not given in the paper; equal).
    """

    adversarial: float = 0.05
    pixel: float = 0.01
    gradient_content: float = 0.5
    image_content: float = 1.0
    gradient_l1: float = 0.01
    image_l1: float = 1.0
    scale_weights: tuple = field(default=(1.0, 1.0, 1.0))


def _log_d_is(logits: torch.Tensor, real: bool) -> torch.Tensor:
    # -E[log D] (real) or -E[log(1 - D)] (fake), from logits without overflow.
    return F.softplus(-logits if real else logits).mean()


def madn_generator_loss(outputs: MADNOutputs, sharp: torch.Tensor, discriminator: MADNDiscriminator | None,
                        weights: MADNLossWeights = MADNLossWeights()) -> tuple[torch.Tensor, dict]:
    """L_G of eqs. 10-17 for one batch.

    L_G = alpha L_pixel + phi1 ||M(X_t) - G_gb||_1 + phi2 (beta1 ||M(X_t) - M(G(X_b))||_1
    + beta2 ||G(X_b) - X_t||_1) + lambda (L_adv^G + L_adv^GB), with L_pixel the multi-scale L2 of
    eq. 12 (sum over scales of w^i / (2 N^i) ||I_i - X_t at scale i||^2) and the adversarial terms
    -log D(G(X_b)) and -log D(G_gb) (eqs. 15-16). L1 norms are means over the elements.

    Args:
        outputs: the generator's :class:`MADNOutputs`.
        sharp: X_t, the sharp images.
        discriminator: D, or None to leave out the adversarial terms.
        weights: the loss weights.

    Returns:
        (total loss, dict of the separate terms as floats).

    Example:
        >>> from deblur_ops.models import MADNGenerator
        >>> g = MADNGenerator(width=2, res_blocks=0)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> total, terms = madn_generator_loss(g.outputs(x), x, None)
        >>> sorted(terms)
        ['gradient_content', 'image_content', 'pixel']
    """
    targets = image_pyramid(sharp)
    pixel = sum(w * (out - t).square().sum() / (2 * out.numel())
                for w, out, t in zip(weights.scale_weights, outputs.scales, targets))  # eq. 12
    sharp_gradient = sobel_gradient_map(sharp)
    gradient_content = (outputs.gradient - sharp_gradient).abs().mean()
    image_content = (weights.gradient_l1 * (sobel_gradient_map(outputs.image) - sharp_gradient).abs().mean()
                     + weights.image_l1 * (outputs.image - sharp).abs().mean())  # eq. 13
    total = weights.pixel * pixel + weights.gradient_content * gradient_content + weights.image_content * image_content
    terms = {"pixel": pixel.item(), "gradient_content": gradient_content.item(), "image_content": image_content.item()}
    if discriminator is not None:
        adversarial = (_log_d_is(discriminator.logits(outputs.image), True)
                       + _log_d_is(discriminator.logits(outputs.gradient), True))  # eqs. 14-16
        total = total + weights.adversarial * adversarial
        terms["adversarial"] = adversarial.item()
    return total, terms


def madn_discriminator_loss(discriminator: MADNDiscriminator, outputs: MADNOutputs,
                            sharp: torch.Tensor) -> torch.Tensor:
    """L_d = L_d^G + L_d^GB (eqs. 18-20): sharp images and sharp gradient maps are real, G's image
    and reconstructed gradient map are fake. The generator's outputs are detached.

    Example:
        >>> from deblur_ops.models import MADNGenerator
        >>> g = MADNGenerator(width=2, res_blocks=0)
        >>> d = MADNDiscriminator(patch=32, widths=(2,) * 5, dense=4)
        >>> x = torch.rand(2, 1, 32, 32)
        >>> madn_discriminator_loss(d, g.outputs(x), x).item() > 0
        True
    """
    real = _log_d_is(discriminator.logits(sharp), True) + _log_d_is(
        discriminator.logits(sobel_gradient_map(sharp)), True)
    fake = _log_d_is(discriminator.logits(outputs.image.detach()), False) + _log_d_is(
        discriminator.logits(outputs.gradient.detach()), False)
    return real + fake


def madn_optimizers(gan: MADN, generator_lr: float = 1e-4, discriminator_lr: float = 4e-4):
    """Adam for G and for D with the paper's settings (Sec. 4.3, 5.1): betas (0.9, 0.999), eps 1e-8.

    Example:
        >>> gan = MADN({"width": 2, "res_blocks": 0}, {"patch": 32, "widths": (2,) * 5, "dense": 4})
        >>> [o.param_groups[0]["lr"] for o in madn_optimizers(gan)]
        [0.0001, 0.0004]
    """
    return (torch.optim.Adam(gan.generator.parameters(), generator_lr, betas=(0.9, 0.999), eps=1e-8),
            torch.optim.Adam(gan.discriminator.parameters(), discriminator_lr, betas=(0.9, 0.999), eps=1e-8))


def madn_train_step(gan: MADN, batch: dict, generator_optimizer, discriminator_optimizer, *,
                    loss_weights: MADNLossWeights = MADNLossWeights(), max_grad_norm: float = 2.0,
                    adversarial: bool = True) -> dict:
    """One alternating update: D on L_d, then G on L_G (Algorithm 1).

    The paper clips gradients "with minimum 1e-5 and maximum 2" because of SN's recurrence;
    here the global norm of each network's gradient is clipped at ``max_grad_norm`` (a lower
    bound on gradients has no sensible counterpart).

    Args:
        gan: the generator and discriminator to update.
        batch: dict with "blurry" and "sharp", (B, C, P, P) with P the discriminator's patch.
        generator_optimizer, discriminator_optimizer: e.g. from :func:`madn_optimizers`.
        loss_weights: the weights of L_G's terms.
        max_grad_norm: clipping threshold.
        adversarial: False trains G on the content losses only (and leaves D alone).

    Returns:
        dict of floats: "generator" (L_G), "discriminator" (L_d, when adversarial) and L_G's terms.

    Raises:
        FloatingPointError: L_G is NaN or infinite.

    Example:
        >>> gan = MADN({"width": 2, "res_blocks": 0}, {"patch": 32, "widths": (2,) * 5, "dense": 4})
        >>> batch = {"blurry": torch.rand(2, 1, 32, 32), "sharp": torch.rand(2, 1, 32, 32)}
        >>> sorted(madn_train_step(gan, batch, *madn_optimizers(gan)))
        ['adversarial', 'discriminator', 'generator', 'gradient_content', 'image_content', 'pixel']
    """
    blurry, sharp = batch["blurry"], batch["sharp"]
    outputs = gan.generator.outputs(blurry)
    report = {}
    if adversarial:
        discriminator_optimizer.zero_grad(set_to_none=True)
        d_loss = madn_discriminator_loss(gan.discriminator, outputs, sharp)
        d_loss.backward()
        nn.utils.clip_grad_norm_(gan.discriminator.parameters(), max_grad_norm)
        discriminator_optimizer.step()
        report["discriminator"] = d_loss.item()
    generator_optimizer.zero_grad(set_to_none=True)
    gan.discriminator.requires_grad_(False)
    try:
        g_loss, terms = madn_generator_loss(outputs, sharp, gan.discriminator if adversarial else None,
                                            loss_weights)
        if not torch.isfinite(g_loss):
            raise FloatingPointError(f"generator loss became {g_loss.item()} ({terms}); lower the learning rate")
        g_loss.backward()
    finally:
        gan.discriminator.requires_grad_(True)
    nn.utils.clip_grad_norm_(gan.generator.parameters(), max_grad_norm)
    generator_optimizer.step()
    report["generator"] = g_loss.item()
    return {**report, **terms}


RECIPE_DEFAULTS = {"width": 16, "res_blocks": 2, "residual": True, "discriminator_widths": "16,16,32,64,128",
                   "discriminator_head": "1,1", "dense": 256, "adversarial": True, "max_grad_norm": 2.0,
                   "decay_power": 1.0, "max_length": 21.0, "noise_low": 0.003, "noise_high": 0.015, "half": True,
                   "data": "uniform", "pool": 0}


def train_madn(options: TrainOptions) -> dict:
    """``deblur train madn``: the alternating G / D updates of paper 003 (Algorithm 1, Sec. 4-5.1).

    Adam for G (default lr 1e-4) and D (4 x G's lr), both decayed polynomially to 0 at the last
    step (power ``decay_power``), gradient norms clipped at ``max_grad_norm``; the losses of
    :func:`madn_generator_loss` and :func:`madn_discriminator_loss` with the paper's weights. The
    generator's weights are written (the discriminator is only needed for training).

    ``--set`` options: ``width``, ``res_blocks``, ``residual``, ``discriminator_widths`` ("64,64,128,256,512"
    is Table 1), ``discriminator_head``, ``dense``, ``adversarial``, ``max_grad_norm``, ``decay_power``,
    ``max_length``, ``noise_low``/``noise_high``, ``data`` (``uniform`` or ``shake``: spatially varying camera
    shake by the exact trajectory model), ``pool`` (pairs made once and reused, for ``data=shake``), ``half`` (store float16).
    """
    cfg = options.pop_extra(dict(RECIPE_DEFAULTS))
    torch.manual_seed(options.seed)
    patch = options.get("patch", 128)
    gan = MADN({"width": cfg["width"], "res_blocks": cfg["res_blocks"], "residual": cfg["residual"]},
               {"patch": patch, "widths": int_tuple(cfg["discriminator_widths"], "discriminator_widths"),
                "head_channels": int_tuple(cfg["discriminator_head"], "discriminator_head"), "dense": cfg["dense"]})
    train, val, described = blind_data(options, patch, cfg)
    loss_weights = MADNLossWeights()
    lr = options.get("lr", 1e-4)
    steps = options.get("steps", 500)
    optimizers = madn_optimizers(gan, generator_lr=lr, discriminator_lr=4 * lr)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: max(0.0, 1 - t / steps) ** cfg["decay_power"])
                  for o in optimizers]

    def train_step(batch):
        return madn_train_step(gan, batch, *optimizers, loss_weights=loss_weights, max_grad_norm=cfg["max_grad_norm"],
                               adversarial=cfg["adversarial"])["generator"]

    def predict(batch):
        return gan.generator(batch["blurry"])

    batch_size = options.get("batch_size", 4)
    history = fit(gan, train_step, predict, train, val, steps=steps, batch_size=batch_size, optimizers=optimizers,
                  schedulers=schedulers, validate_every=options.get("validate_every", 50),
                  val_batches=validation_batches(batch_size), checkpoint=options.checkpoint, resume=options.resume,
                  seed=options.seed, progress=options.progress, device=options.device, keep_best=True)
    info = training_info(options, history, described, lr={"generator": lr, "discriminator": 4 * lr},
                         optimizer="Adam(0.9, 0.999, eps 1e-8), polynomial decay to 0",
                         loss="paper 003 eqs. 10-20, weights " + str(vars(loss_weights)),
                         adversarial=cfg["adversarial"], max_grad_norm=cfg["max_grad_norm"],
                         discriminator=gan.discriminator.config(), best_step=history.get("best_step"),
                         float16=cfg["half"])
    save_pretrained(gan.generator, options.out, config=gan.generator.config(), info=info, name=PRETRAINED_NAME,
                    half=cfg["half"])
    return info

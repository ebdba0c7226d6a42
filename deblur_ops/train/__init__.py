"""Training: synthetic data (:mod:`.datasets`), the shared loop (:mod:`.loop`), and the recipes that
``deblur train <name>`` runs, one module per paper's model (:mod:`.irc`, :mod:`.wiener_stack_net`,
:mod:`.rgdm`, :mod:`.autoencoder`, :mod:`.madn`), all registered in the one table below.

Training depends on :mod:`deblur_ops.models` (the networks it trains), never the other way round.
"""
from .datasets import SyntheticBlur, load_images, psnr_batch, to_device
from .loop import fit, supervised_step, validate
from .recipes import RECIPES, Recipe, TrainOptions, register_recipe, training_info
from .autoencoder import train_autoencoder
from .irc import train_blind, train_irc, train_motion
from .madn import train_madn
from .rgdm import train_rgdm
from .wiener_stack_net import train_wiener_stack_net

register_recipe("irc", "IRC-Net (paper 004) fine-tuned on uniform motions and camera-motion fields -> irc-motion",
                train_irc)
register_recipe("motion", "Motion-Net (paper 004) on camera-motion fields -> motion-net", train_motion)
register_recipe("blind", "Motion-Net + IRC-Net end to end on camera-motion fields -> blind-irc", train_blind)
register_recipe("autoencoder", "DeblurAutoencoder (paper 002) on synthetic uniform blur -> autoencoder",
                train_autoencoder)
register_recipe("madn", "MADN generator + discriminator (paper 003) on synthetic uniform blur -> madn", train_madn)
register_recipe("rgdm", "paper 000 RGDM (grey, one model for noise 0.3-1.5 %) on synthetic uniform blur", train_rgdm)
register_recipe("wiener-stack-net", "paper 001 WienerStackNet (grey; SSIM loss) on synthetic uniform blur",
                train_wiener_stack_net)


def recipes() -> dict[str, str]:
    """Training recipes, name -> description.

    Example:
        >>> "irc" in recipes()
        True
    """
    return {name: r.description for name, r in sorted(RECIPES.items())}


__all__ = ["SyntheticBlur", "load_images", "psnr_batch", "to_device", "fit", "supervised_step", "validate",
           "RECIPES", "Recipe", "TrainOptions", "register_recipe", "training_info", "recipes"]

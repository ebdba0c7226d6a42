"""Learned models of the five source papers, as restoration methods, and their shipped weights.

- :class:`IRCNet`, :class:`MotionNet`, :class:`BlindIRC` — paper 004 (IRC-Net, Motion-Net, blind pipeline).
- :class:`DeblurAutoencoder` — paper 002 (blind convolutional autoencoder).
- :class:`MADN` (:class:`MADNGenerator`, :class:`MADNDiscriminator`) — paper 003 (blind multi-scale GAN).
- :class:`WienerStackNet` — paper 001; :class:`RGDM` — paper 000 (non-blind).

Each paper's module holds its network and the restoration method(s) it registers with
:func:`deblur_ops.restore.register`; importing this package imports them in the order below, and
registers every shipped weight file in the one table at the end. The papers' classical baselines
are in :mod:`deblur_ops.restore.baselines`, the training recipes in :mod:`deblur_ops.train`.

``load_pretrained(name)`` returns a shipped trained model (see :func:`pretrained_models`);
``deblur_ops.deblur(..., method=...)`` uses them as restoration methods.
"""
from .pretrained import (PRETRAINED, load_pretrained, load_weights, pretrained_models, read_weights,
                         register_pretrained, save_pretrained)
from .irc_net import IRCNet
from .motion_net import MotionNet, motion_mse
from .blind_irc import BlindIRC
# The method modules, each registering its restoration methods when imported.
from . import methods  # noqa: F401  "irc-net", "blind-irc" (paper 004)
from .wiener_stack_net import WienerStackNet  # "wiener-stack-net" (paper 001)
from .rgdm import RGDM  # "rgdm" (paper 000)
from .autoencoder import DeblurAutoencoder  # "autoencoder" (paper 002)
from .madn import MADN, MADNDiscriminator, MADNGenerator  # "madn" (paper 003)

# Shipped weights: registry name -> the builder of its module (weights/<name>.pt).
register_pretrained("irc-motion", IRCNet, "IRC-Net (grid x update) fine-tuned on uniform motion and camera-motion fields")
register_pretrained("motion-net", MotionNet, "Motion-Net trained on camera-motion fields (paper 004 §3.1)")
register_pretrained("blind-irc", BlindIRC, "Motion-Net + IRC-Net fine-tuned end to end (paper 004 §3.3)")
register_pretrained("autoencoder", DeblurAutoencoder, "paper 002 autoencoder, blind, synthetic uniform blur")
register_pretrained("madn", MADNGenerator, "paper 003 MADN generator, blind, synthetic uniform blur")
register_pretrained("rgdm", RGDM, "paper 000 recurrent gradient-descent deconvolution, grey, for method 'rgdm'")
register_pretrained("wiener-stack-net", WienerStackNet,
                    "paper 001 Wiener-stack CNN, grey (RGB folded into the batch), for method 'wiener-stack-net'")

__all__ = ["BlindIRC", "DeblurAutoencoder", "IRCNet", "MADN", "MADNDiscriminator", "MADNGenerator", "MotionNet",
           "RGDM", "WienerStackNet", "motion_mse", "PRETRAINED", "load_pretrained", "load_weights",
           "pretrained_models", "read_weights", "register_pretrained", "save_pretrained"]

"""Learned models of the five source papers, and their shipped weights.

- :class:`IRCNet`, :class:`MotionNet`, :class:`BlindIRC` — paper 004 (IRC-Net, Motion-Net, blind pipeline).
- :class:`DeblurAutoencoder` — paper 002 (blind convolutional autoencoder).
- :class:`MADN` (:class:`MADNGenerator`, :class:`MADNDiscriminator`) — paper 003 (blind multi-scale GAN).
- :class:`WienerStackNet` — paper 001; :class:`RGDM` — paper 000 (non-blind; their modules register
  their methods, baselines, weights and recipes).

``load_pretrained(name)`` returns a shipped trained model (see :func:`pretrained_models`);
``deblur_ops.deblur(..., method=...)`` uses them as restoration methods.
"""
from .blind_irc import BlindIRC
from .irc_net import IRCNet
from .motion_net import MotionNet, motion_mse
from .pretrained import (PRETRAINED, load_pretrained, load_weights, pretrained_models, read_weights,
                         register_pretrained, save_pretrained)

register_pretrained("irc-motion", IRCNet, "IRC-Net (grid x update) fine-tuned on uniform motion and camera-motion fields")
register_pretrained("motion-net", MotionNet, "Motion-Net trained on camera-motion fields (paper 004 §3.1)")
register_pretrained("blind-irc", BlindIRC, "Motion-Net + IRC-Net fine-tuned end to end (paper 004 §3.3)")

from . import methods  # noqa: E402,F401  (registers the learned restoration methods and recipes)
from .autoencoder import DeblurAutoencoder  # noqa: E402  (registers "autoencoder": method, weights, recipe)
from .madn import MADN, MADNDiscriminator, MADNGenerator  # noqa: E402  (registers "madn")
from .rgdm import RGDM  # noqa: E402
from .wiener_stack_net import WienerStackNet  # noqa: E402

__all__ = ["BlindIRC", "DeblurAutoencoder", "IRCNet", "MADN", "MADNDiscriminator", "MADNGenerator", "MotionNet",
           "RGDM", "WienerStackNet", "motion_mse", "PRETRAINED", "load_pretrained", "load_weights",
           "pretrained_models", "read_weights", "register_pretrained", "save_pretrained"]

"""Training: synthetic data (:mod:`.data`), the shared loop (:mod:`.loop`), recipes for ``deblur train``."""
from .datasets import SyntheticBlur, load_images, psnr_batch, to_device
from .loop import fit, supervised_step, validate
from .recipes import RECIPES, Recipe, TrainOptions, register_recipe, training_info


def recipes() -> dict[str, str]:
    """Training recipes, name -> description (importing the models registers theirs).

    Example:
        >>> "irc" in recipes()
        True
    """
    from .. import models  # noqa: F401  (registers the recipes)

    return {name: r.description for name, r in sorted(RECIPES.items())}


__all__ = ["SyntheticBlur", "load_images", "psnr_batch", "to_device", "fit", "supervised_step", "validate",
           "RECIPES", "Recipe", "TrainOptions", "register_recipe", "training_info", "recipes"]

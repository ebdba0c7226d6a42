"""Training of paper 000's RGDM: ``deblur train rgdm``.

The model (:class:`deblur_ops.models.RGDM`) is trained with recursive supervision (every step's
estimate is scored, :func:`recursive_loss`) on trajectories that continue from the model's own
earlier states (:class:`TrajectoryPool`), so that the late steps of a 50-step test-time run are
trained as well as the first ones.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.pretrained import save_pretrained
from ..models.rgdm import DEFAULT_TOL, MAX_STEPS, RGDM
from ..restore.baselines import gradient_descent
from .datasets import SyntheticBlur, psnr_batch
from .loop import fit
from .recipes import training_info


def recursive_loss(estimates: list[torch.Tensor], sharp: torch.Tensor) -> torch.Tensor:
    """Mean squared error averaged over every step's estimate ("recursive supervision", paper 000).

    Supervising every step, not only the last, teaches the shared unit to improve any
    intermediate estimate, which is what lets it run for more steps at test time than in training.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> float(recursive_loss([x, x + 1], x))
        0.5
    """
    return torch.stack([torch.mean((x - sharp) ** 2) for x in estimates]).mean()


class TrajectoryPool:
    """Training batches that carry on along the model's own trajectories (truncated back-propagation).

    Each of the ``size`` slots holds a training sample, the model's current state for it on the
    extended domain, its age (steps done) and its horizon (drawn uniformly from
    ``[steps_per_update, max_steps]``). Every update runs ``steps_per_update`` steps with gradients
    from the stored states and then stores the new ones; a slot whose age reaches its horizon
    takes the matching sample of the next fresh batch and restarts from the observation. So the
    model is trained on the early *and* the late steps of its test-time runs (up to 50) while
    every update back-propagates through a few steps only, and the staggered horizons keep
    every age in each batch.

    Args:
        steps_per_update: steps with gradients per update (the model's ``train_steps``).
        max_steps: the longest trajectory (the test-time maximum).
        generator: draws the horizons.
    """

    def __init__(self, steps_per_update: int, max_steps: int, generator: torch.Generator):
        self.steps_per_update, self.max_steps, self.generator = steps_per_update, max_steps, generator
        self.batch = None

    def _horizons(self, n: int) -> torch.Tensor:
        return torch.randint(self.steps_per_update, self.max_steps + 1, (n,), generator=self.generator)

    def refill(self, fresh: dict) -> torch.Tensor:
        """Put fresh samples into the finished slots; returns the (B,) mask of slots that restart."""
        n = fresh["blurry"].shape[0]
        if self.batch is None:
            self.batch = {k: fresh[k].clone() for k in ("blurry", "sharp", "psf")}
            self.state, self.age, self.horizon = None, torch.zeros(n, dtype=torch.long), self._horizons(n)
            return torch.ones(n, dtype=torch.bool)
        done = self.age >= self.horizon
        for key, value in self.batch.items():
            value[done] = fresh[key][done]
        self.age[done] = 0
        self.horizon[done] = self._horizons(int(done.sum()))
        return done

    def advance(self, states: torch.Tensor) -> None:
        self.state = states.detach()
        self.age += self.steps_per_update


def train_rgdm(options) -> dict:
    """Recipe ``deblur train rgdm``: one grey RGDM for all noise levels 0.3-1.5 % and uniform PSFs.

    Defaults (override with the CLI flags and ``--set key=value``): Adam, lr 1e-4 with cosine decay
    to a tenth (the model starts as gradient descent and is fine-tuned from there), gradient
    clipping at 1, 500 updates of 8 patches of 64 x 64, PSFs up to 27 px long
    in 29 x 29. Each update back-propagates through ``train_steps`` (3) steps continued from the
    model's own earlier states (:class:`TrajectoryPool`, trajectories up to 50 steps), with the MSE
    averaged over those steps' estimates. ``--set`` keys: width (16), kernel_size (5),
    train_steps (3), psf_size, max_length, val_batches. Validation runs the test-time rule
    (relative change < :data:`DEFAULT_TOL`, at most 50 steps); after training the same patches
    are scored by plain gradient descent with the same number of steps per patch (the paper's
    baseline) and with 50 steps; all of it goes into the weight file's info. A resumed run
    restarts the trajectories from the observations.

    Args:
        options: :class:`deblur_ops.train.TrainOptions`.

    Returns:
        The info dict stored with the weights.
    """
    cfg = options.pop_extra({"width": 16, "kernel_size": 5, "train_steps": 3, "psf_size": 29, "max_length": 27.0,
                             "val_batches": 4})
    steps, batch_size = options.get("steps", 500), options.get("batch_size", 8)
    patch, lr = options.get("patch", 64), options.get("lr", 1e-4)
    data_options = {"psf": "uniform", "patch": patch, "psf_size": cfg["psf_size"], "channels": 1,
                    "noise": (0.003, 0.015), "max_length": cfg["max_length"], "images": options.images}
    train_data, val_data = SyntheticBlur.splits(**data_options, seed=options.seed)
    torch.manual_seed(options.seed)
    model = RGDM(channels=1, width=cfg["width"], kernel_size=cfg["kernel_size"], train_steps=cfg["train_steps"])
    model.to(options.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    pool = TrajectoryPool(cfg["train_steps"], MAX_STEPS, torch.Generator().manual_seed(options.seed))

    def train_step(fresh: dict) -> float:
        restart = pool.refill(fresh)
        batch = pool.batch
        operator = model.operator(batch["blurry"], batch["psf"])
        start = operator.start if pool.state is None else torch.where(
            restart.reshape(-1, 1, 1, 1).to(operator.start.device), operator.start, pool.state)
        optimizer.zero_grad(set_to_none=True)
        states = model.unroll(operator, start, model.train_steps)
        loss = recursive_loss([operator.crop(x) for x in states], batch["sharp"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)}; lower the learning rate")
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        pool.advance(states[-1])
        return float(loss.detach())

    # Validation runs the test-time rule (stop on relative change, at most 50 steps), not the training unroll.
    history = fit(model, train_step, lambda b: model.restore(b["blurry"], b["psf"])[0], train_data, val_data,
                  steps=steps, batch_size=batch_size, optimizers=[optimizer], schedulers=[scheduler],
                  validate_every=options.get("validate_every", 200), val_batches=cfg["val_batches"],
                  checkpoint=options.checkpoint, resume=options.resume, seed=options.seed,
                  progress=options.progress, device=options.device)
    # The same validation patches fit scored (same split and seed), for the baselines.
    replay = SyntheticBlur(**data_options, seed=options.seed, split="val")
    model.eval()
    scores = {"rgdm": [], "gd_same": [], "gd_50": []}
    used = []
    with torch.no_grad():
        for _ in range(cfg["val_batches"]):
            b = replay.batch(batch_size)
            x, taken = model.restore(b["blurry"], b["psf"])
            scores["rgdm"].append(psnr_batch(x, b["sharp"]))
            used.append(taken)
            same = [gradient_descent(b["blurry"][i:i + 1], b["psf"][i:i + 1], int(n)) for i, n in enumerate(taken)]
            scores["gd_same"].append(psnr_batch(torch.cat(same), b["sharp"]))
            scores["gd_50"].append(psnr_batch(gradient_descent(b["blurry"], b["psf"], MAX_STEPS), b["sharp"]))
    mean = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    used = torch.cat(used).float()
    described = {**data_options, "noise": list(data_options["noise"]),
                 "images": "built-in offline skimage images (training split)" if options.images is None
                 else str(options.images)}
    info = training_info(options, history, described,
                         loss="MSE averaged over the estimates of each update's steps",
                         training=f"TrajectoryPool, {cfg['train_steps']} steps per update, trajectories up to "
                                  f"{MAX_STEPS} steps", lr=lr, schedule="cosine to lr/10", grad_clip=1.0,
                         patch=patch, test_rule={"tol": DEFAULT_TOL, "max_steps": MAX_STEPS},
                         validation_restore_psnr=mean["rgdm"], validation_restore_steps_mean=float(used.mean()),
                         validation_restore_steps_max=int(used.max()), validation_baseline_psnr=mean["gd_same"],
                         baseline="gradient-descent, step 1, same number of steps per patch as rgdm took",
                         validation_gd50_psnr=mean["gd_50"])
    save_pretrained(model.cpu(), options.out, config=model.config(), info=info, name="rgdm")
    return info

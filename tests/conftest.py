from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
# The one way to mark a CUDA test: `pytest -m cuda` selects it (the GPU run of scripts/gpu_check.sh)
# and pytest_collection_modifyitems below skips it where no CUDA device is present.
requires_cuda = pytest.mark.cuda


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def manifest():
    """The napari plugin's manifest, registered with npe2 (an editable install registers it already)."""
    npe2 = pytest.importorskip("npe2")
    parsed = npe2.PluginManifest.from_file(Path(__file__).resolve().parents[1] / "napari_deblur" / "napari.yaml")
    manager = npe2.PluginManager.instance()
    if parsed.name not in manager:
        manager.register(parsed)
    return parsed


@pytest.fixture
def run_to_end(qtbot):
    """Start a widget's restoration (``preview=True``: its preview) and wait until it is idle again."""
    def run(widget, timeout=120_000, preview=False):
        # Wait on the widget's own state: a fast worker can finish before a waitSignal would connect.
        widget.preview_current() if preview else widget.run()
        assert widget.worker is not None and not widget.run_button.enabled
        qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=timeout)
    return run


@pytest.fixture
def small_models(monkeypatch):
    """Small untrained paper-004 models in place of the shipped weights (fast, and there without them).

    Returns the dict name -> model that ``deblur_ops.models.methods.cached_model`` now serves.
    """
    from deblur_ops.models import BlindIRC, IRCNet, MotionNet, methods

    models = {"motion-net": MotionNet(width=4, max_length=9.0).eval(),
              "blind-irc": BlindIRC({"width": 4, "max_length": 9.0},
                                    {"stages": 1, "inner_steps": 1, "max_length": 9}).eval(),
              "irc-motion": IRCNet(stages=1, inner_steps=1, max_length=9).eval()}
    shipped = methods.cached_model  # the other learned methods keep their shipped weights
    monkeypatch.setattr(methods, "cached_model",
                        lambda name, device: models[name].to(device) if name in models else shipped(name, device))
    return models

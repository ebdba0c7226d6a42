"""Reliability of the application layer: faults found by fault injection (issue 16), one test each.

Each test pins a promise of ``deblur run`` (README, "What `deblur run` promises") or of the
library under it: no data loss, no unsafe unpickling, no crash on flat frames or concurrent
caches, clear errors.
"""
import threading

import numpy as np
import pytest
import torch

import deblur_ops
from deblur_ops.psf import inverse as inverse_module
from deblur_ops.psf import motion_bank


# --- item 6: the inverse-filter disk cache --------------------------------------------------------------

def test_inverse_filter_cache_threads_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(tmp_path))
    bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
    expected = inverse_module.inverse_filters(bank, 15, cache=False)
    # Every writer finishes its temporary file before any renames it: the worst interleaving, every time.
    barrier = threading.Barrier(4, timeout=30)
    real_save = torch.save

    def save_then_wait(*args, **kwargs):
        real_save(*args, **kwargs)
        barrier.wait()

    monkeypatch.setattr(torch, "save", save_then_wait)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = inverse_module.inverse_filters(bank, 15)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in results:
        torch.testing.assert_close(r, expected, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    torch.testing.assert_close(inverse_module.inverse_filters(bank, 15), expected, rtol=0, atol=0)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not a torch file at all"])
def test_corrupt_inverse_filter_cache_is_recomputed(tmp_path, monkeypatch, content):
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(tmp_path))
    bank, _ = motion_bank(lengths=[1, 5], angles=[0, 90], size=7)
    expected = inverse_module.inverse_filters(bank, 15, cache=False)
    inverse_module.inverse_filters(bank, 15)
    (cached,) = tmp_path.iterdir()
    cached.write_bytes(content)
    torch.testing.assert_close(inverse_module.inverse_filters(bank, 15), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.load(cached, weights_only=True).float(), expected, rtol=0, atol=0)

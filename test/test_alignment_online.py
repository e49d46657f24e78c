"""Online adapter trainer: bounded buffers, hold-out split, swap only on improvement, idle gating."""
import time

import numpy as np
import pytest
import torch

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter
from selfi_ros.alignment.online import OnlineAdapterTrainer
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.loading import load_model

H, W = 28, 42


@pytest.fixture(scope="module")
def backbone():
    return load_model(None, config=VGGTConfig.tiny(), random_weights=True, seed=0)


def _kf(i):
    g = torch.Generator().manual_seed(i)
    E = np.zeros((3, 4)); E[:, :3] = np.eye(3); E[0, 3] = -0.02 * i
    K = np.array([[40.0, 0, (W - 1) / 2], [0, 40.0, (H - 1) / 2], [0, 0, 1]])
    return torch.rand(3, H, W, generator=g), np.full((H, W), 2.0, np.float32), E, K


def _make(backbone, scores=None, **kw):
    calls = []

    def score_fn(adapter, clips):
        calls.append(len(clips))
        return scores.pop(0)

    ad = FeatureAdapter(AdapterConfig.for_backbone(VGGTConfig.tiny()))
    opts = dict(clip_len=3, max_train_clips=2, max_val_clips=1, holdout_every=2, eval_every=1, pseudo_gt="given",
                num_queries=16, seed=0, score_fn=score_fn if scores is not None else None)
    opts.update(kw)
    ot = OnlineAdapterTrainer(backbone, ad, **opts)
    return ot, ad, calls


def test_buffers_are_bounded_and_split(backbone):
    ot, _, _ = _make(backbone, scores=[])
    assert not ot.step()  # nothing to train on yet
    for i in range(3 * 7):  # 7 clips: #2, #4, #6 held out
        ot.add_keyframe(*_kf(i))
    assert ot.stats.train_clips == 2 and ot.stats.val_clips == 1
    assert ot.stats.dropped_clips == (4 - 2) + (3 - 1)
    with pytest.raises(ValueError, match="multiple of the patch"):
        ot.add_keyframe(torch.rand(3, 30, 42))


def test_swap_only_when_candidate_beats_current(backbone):
    # scores consumed in order: current, candidate(step1) -> swap; candidate(step2) worse -> keep
    ot, ad0, calls = _make(backbone, scores=[0.20, 0.50, 0.40])
    for i in range(3 * 2):
        ot.add_keyframe(*_kf(i))
    assert ot.adapter() is ad0
    assert ot.step()
    first = ot.adapter()
    assert first is not ad0 and ot.stats.swaps == 1 and ot.stats.current_score == 0.50
    # the swapped-in adapter is a snapshot: further training does not change it
    snap = {k: v.clone() for k, v in first.state_dict().items()}
    assert ot.step()
    assert ot.adapter() is first and ot.stats.rejected == 1 and ot.stats.swaps == 1
    assert all(torch.equal(snap[k], v) for k, v in first.state_dict().items())
    # the candidate did train (weights differ from the original adapter)
    assert any(not torch.equal(a, b) for a, b in zip(ad0.state_dict().values(),
                                                      ot._trainer.adapter.state_dict().values()))


def test_default_score_and_background_thread_respects_idle(backbone):
    ot, _, _ = _make(backbone, eval_every=2)
    for i in range(3 * 2):
        ot.add_keyframe(*_kf(i))
    ot.start()
    time.sleep(0.5)
    assert ot.stats.steps == 0  # not idle: no training
    ot.set_idle(True)
    t0 = time.time()
    while ot.stats.evaluations < 1 and time.time() - t0 < 30:
        time.sleep(0.05)
    ot.set_idle(False)
    ot.stop()
    assert ot.stats.errors == 0 and ot.stats.steps >= 2 and ot.stats.evaluations >= 1
    assert 0.0 <= ot.stats.current_score <= 1.0 and 0.0 <= ot.stats.last_candidate_score <= 1.0
    n = ot.stats.steps
    time.sleep(0.3)
    assert ot.stats.steps == n  # stopped

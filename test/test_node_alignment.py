"""Node plumbing of the Selfi alignment: parameters -> backend options, and the online adapter hook (swaps
only on a held-out improvement; stub scorer). Tiny RANDOM-weight model: plumbing only."""
import threading

import numpy as np
import pytest
import torch

from selfi_ros.alignment.adapter import AdapterConfig, FeatureAdapter, save_adapter
from selfi_ros.backends.vggt import VGGTBackend
from selfi_ros.engine.status import BackendStatus
from selfi_ros.engine.types import Frame
from selfi_ros.model.config import VGGTConfig
from selfi_ros.ros import params as P
from selfi_ros.ros.node import make_backend_from_config
from selfi_ros.backends.vggt_online import OnlineAdapterHook

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def adapter_path(tmp_path_factory):
    torch.manual_seed(5)
    a = FeatureAdapter(AdapterConfig.for_backbone(VGGTConfig.tiny(sail_reloc=True)))
    return str(save_adapter(a, tmp_path_factory.mktemp("ad") / "adapter.safetensors"))


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(stamp_ns=1000 * i, image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), index=i)
            for i in range(n)]


def _synthetic_window(wid, H=42, W=56):
    """A window whose pseudo-GT is consistent: fronto-parallel plane at depth 2, second camera 0.05 to the
    right (so every pixel has a visible correspondence)."""
    from selfi_ros.engine.types import WindowReconstruction

    rng = np.random.default_rng(wid)
    E = np.stack([np.hstack([np.eye(3), np.zeros((3, 1))])] * 3)
    E[1, 0, 3], E[2, 0, 3] = -0.05, -0.1
    K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])
    return WindowReconstruction(window_id=wid, stamps_ns=np.arange(3), frame_indices=np.arange(3), extrinsics=E,
                                intrinsics=np.stack([K] * 3), image_size_hw=(H, W),
                                depth=np.full((3, H, W), 2.0, np.float32),
                                colors=rng.integers(0, 255, (3, H, W, 3), dtype=np.uint8))


def test_alignment_parameters(adapter_path):
    _, _, opts = P.configs_from_values({"backend": "vggt", "adapter": adapter_path, "pose_check": "reject",
                                        "refine_window": True, "pose_check_max_rot_deg": 3})
    assert opts.adapter == adapter_path and opts.pose_check == "reject" and opts.refine_window is True
    assert opts.pose_check_max_rot_deg == 3.0 and opts.pose_check_max_rel_trans == 0.1
    assert not hasattr(P.configs_from_values({}).backend, "adapter")  # colmap: no alignment options
    with pytest.raises(ValueError, match="pose_check"):
        P.configs_from_values({"backend": "vggt", "pose_check": "sometimes"})
    for bad in ({"pose_check": "reject"}, {"refine_window": True}, {"online_adapter_training": True}):
        with pytest.raises(ValueError, match="adapter"):
            P.configs_from_values({"backend": "vggt", **bad})
    with pytest.raises(ValueError, match="online_clip_len"):
        P.configs_from_values({"backend": "vggt", "adapter": adapter_path, "online_clip_len": 1})
    node, _, cfg = P.configs_from_values(dict(backend="vggt", allow_random_weights=True, model_config="tiny",
                                              image_width=56, adapter=adapter_path, pose_check="reject",
                                              pose_check_max_rot_deg=2.0))
    b = make_backend_from_config(node, cfg)
    assert isinstance(b, VGGTBackend) and b.adapter is not None
    assert b.pose_check == "reject" and b.config.pose_check_max_rot_deg == 2.0 and b.config.refine_window is False


def test_online_hook_swaps_only_on_improvement(adapter_path):
    b = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=56, adapter=adapter_path)
    first = b.adapter
    scores = iter([0.50, 0.505, 0.60])  # current, candidate (gain < min_gain), candidate (gain)
    calls = []

    def stub(adapter, clips):
        calls.append((adapter, len(clips)))
        return next(scores)

    hook = OnlineAdapterHook(b.model, b.adapter, b.device, clip_len=2, eval_every=1, min_gain=0.01, score_fn=stub,
                             start=False, holdout_every=2, num_queries=32, amp=False)
    fr = _frames(8)
    short = b.reconstruct_window(0, fr[:1])
    assert hook.feed_window(short) is False and hook.windows_skipped == 1
    assert hook.trainer.step() is False  # nothing buffered yet
    for w in range(2):  # clip 1 -> training buffer, clip 2 -> held out
        assert hook.feed_window(_synthetic_window(w + 1))
    st = hook.trainer.stats
    assert st.train_clips == 1 and st.val_clips == 1
    before = {k: v.clone() for k, v in first.state_dict().items()}
    assert hook.trainer.step() is True  # trains, evaluates: 0.505 < 0.50 + 0.01 -> kept
    assert st.swaps == 0 and st.rejected == 1 and hook.take_adapter() is None and b.adapter is first
    assert hook.trainer.step() is True  # 0.60 >= 0.51 -> swapped
    new = hook.take_adapter()
    assert st.swaps == 1 and new is not None and new is not first and hook.swaps == 1
    assert hook.take_adapter() is None  # the same adapter is not handed over twice
    b.set_adapter(new)
    assert b.adapter is first  # takes effect at the next window only
    b.reconstruct_window(9, fr[:3])
    assert b.adapter is new and b.status().adapter_swaps == 1
    # the candidate was trained (weights differ), the original adapter was never modified in place
    for k, v in first.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = any(not torch.equal(v, before[k].to(v.device)) for k, v in b.adapter.state_dict().items())
    assert changed and hook.trainer._trainer.empty_steps == 0
    assert all(n == 1 for _, n in calls)  # scored on the one held-out clip
    assert hook.fill_status(BackendStatus()).online_train_clips == 1 and hook.swaps == 1


def test_online_hook_needs_an_adapter():
    b = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=56)
    with pytest.raises(ValueError, match="adapter"):
        OnlineAdapterHook(b.model, b.adapter, b.device, start=False)
    with pytest.raises(ValueError, match="adapter"):
        VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=56, online_adapter_training=True)


def test_backend_runs_online_training_only_while_idle(adapter_path):
    """The backend builds the hook, feeds it its windows, trains only while set_idle(True) was last
    called, swaps a winning adapter in at the next window and stops the thread in close()."""
    b = VGGTBackend(allow_random_weights=True, model_config="tiny", image_width=56, adapter=adapter_path,
                    online_adapter_training=True, online_clip_len=2, online_eval_every=1000)
    try:
        hook = b.online
        assert hook is not None and hook.trainer._thread is not None and hook.trainer._thread.is_alive()
        first = b.adapter
        fr = _frames(12)
        for w in range(5):  # 4 training clips + 1 held out (every 5th clip)
            b.reconstruct_window(w, fr[2 * w:2 * w + 2])
        st = b.status()
        assert hook.windows_fed == 5 and st.online_windows_fed == 5 and (st.online_train_clips, st.online_val_clips) == (4, 1)
        import time
        time.sleep(0.5)  # not idle: no training step
        assert hook.trainer.stats.steps == 0
        trained, in_step = threading.Event(), threading.Lock()
        orig_step = hook.trainer.step

        def step():
            with in_step:
                out = orig_step()
            trained.set()
            return out
        hook.trainer.step = step
        b.set_idle(True)
        assert trained.wait(60.0), "no training step while idle"
        b.set_idle(False)
        with in_step:  # a step in flight finishes
            n = hook.trainer.stats.steps
        time.sleep(0.5)
        assert hook.trainer.stats.steps == n  # busy again: no more steps
        assert b.status().online_steps == n >= 1
        # a winning adapter from the trainer is swapped in by the backend at its next window
        hook.trainer._current = type(first)(first.cfg)
        b.reconstruct_window(5, fr[10:12])
        assert b.adapter is not first and b.status().adapter_swaps == 1
    finally:
        b.close()
    assert not hook.trainer._thread.is_alive()


def test_node_with_adapter_end_to_end_counts_in_diagnostics(adapter_path, tmp_path):
    """selfi_node (own process, LOCALHOST, own domain) with the tiny random vggt, an adapter, pose_check
    flag, refine_window and online training: the alignment counters reach /diagnostics and add up."""
    pytest.importorskip("rclpy")
    pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")
    from diagnostic_msgs.msg import DiagnosticArray

    from selfi_ros.ros.player import play
    from selfi_ros_testing import NodeProcess, RosClient, diag_values, free_domain_id
    from test_node_vggt import BAG, IMAGE_TOPIC, STATUS, VGGT_PARAMS, status_mod

    d = free_domain_id()
    params = {**VGGT_PARAMS, "adapter": adapter_path, "pose_check": "flag", "refine_window": True,
              "online_adapter_training": True, "online_clip_len": 4, "torch_threads": 1}
    node = NodeProcess(d, params, str(tmp_path / "node.log"))
    c = RosClient(d)
    try:
        c.record(status_mod.SelfiStatus, STATUS)
        c.record(DiagnosticArray, "/diagnostics")
        assert c.wait_for(lambda: c.node.count_subscribers(IMAGE_TOPIC + "/compressed") >= 1, 60, node), \
            node.log()[-3000:]
        c.wait_for(lambda: False, 0.5)
        play(BAG, rate=1.0, topics=[IMAGE_TOPIC + "/compressed", "/camera/camera_info"], node=c.node,
             wait_subscribers=10.0, quiet=True)

        def done():
            s = c.get(STATUS)
            return bool(s) and s[-1].frames_in >= 48 and s[-1].queue_depth == 0 and s[-1].windows >= 2
        def brief():
            s = c.get(STATUS)
            if not s:
                return "no status"
            s = s[-1]
            return (f"frames_in={s.frames_in} queue={s.queue_depth} windows={s.windows} poses={s.poses} "
                    f"window_ms={s.last_window_ms:.0f} localize_ms={s.last_localize_ms:.0f}")
        assert c.wait_for(done, 150, node), brief() + "\n" + node.log()[-1500:]  # slow when the CPU is shared
        c.wait_for(lambda: False, 1.0)
        st = c.get(STATUS)[-1]
        diags = [diag_values(m) for m in c.get("/diagnostics") if m.status and m.status[0].name.startswith("selfi_node")]
        dv = diags[-1]
        n = {k: int(dv[k]) for k in ("pose_checks", "pose_check_ok", "pose_check_flagged", "pose_check_rejected",
                                     "pose_check_unverified", "refine_applied", "refine_rejected",
                                     "online_windows_fed", "online_windows_skipped")}
        assert n["pose_checks"] >= 1 and n["pose_check_rejected"] == 0  # flag mode never rejects
        assert n["pose_check_ok"] + n["pose_check_flagged"] + n["pose_check_unverified"] == n["pose_checks"]
        assert n["refine_applied"] + n["refine_rejected"] == st.windows
        assert n["online_windows_fed"] + n["online_windows_skipped"] == st.windows and n["online_windows_fed"] >= 1
        assert st.localization_failures == 0  # flagged poses are kept
        # the status message carries the same pose-check counts as /diagnostics
        assert (st.pose_check_flagged, st.pose_check_rejected) == (n["pose_check_flagged"], n["pose_check_rejected"])
        assert "online adapter training on" in node.log()
    finally:
        c.close()
        node.stop()

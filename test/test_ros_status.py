"""~/status and /diagnostics are derived in one place (selfi_ros.ros.status): the derivation must match
msg/SelfiStatus.msg field for field (names and types), and /diagnostics must carry every BackendStatus and
EngineStatus field."""
import dataclasses
import math

import pytest

from selfi_ros.engine.status import BackendStatus, EngineStatus
from selfi_ros.ros import status as st


def _filled():
    """Status objects whose every field has a distinct non-default value (so that a mix-up shows)."""
    def fill(cls, base):
        kw = {}
        for i, f in enumerate(dataclasses.fields(cls)):
            d = f.default
            kw[f.name] = (f"{f.name}-v" if isinstance(d, str) else (not d) if isinstance(d, bool)
                          else base + i if isinstance(d, int) else base + i + 0.5)
        return cls(**kw)
    return fill(EngineStatus, 100), fill(BackendStatus, 1000)


def test_status_fields_match_the_message():
    msg_mod = pytest.importorskip("selfi_ros.msg", reason="selfi_ros interfaces not built")
    fields = dict(msg_mod.SelfiStatus.get_fields_and_field_types())
    assert fields.pop("header") == "std_msgs/Header"
    assert fields == st.STATUS_FIELDS  # names and ROS types, both ways
    es, bs = _filled()
    nc = st.NodeCounters(frames_in=7, frames_dropped=3, frames_rejected=2, queue_depth=1, latency_ms=12.5,
                         memory_bytes=99, counts={"size_mismatch": 2})
    v = st.status_values(es, bs, nc)
    assert list(v) == list(st.STATUS_FIELDS)
    for k, ros_type in st.STATUS_FIELDS.items():
        assert type(v[k]) is st.PY_TYPES[ros_type], (k, type(v[k]))
    msg = st.fill_message(msg_mod.SelfiStatus(), v)  # the message accepts every value
    assert msg.frames_rejected == 2 + es.frames_rejected and msg.frames_skipped == es.frames_skipped
    assert (msg.pose_check_flagged, msg.pose_check_rejected, msg.adapter_swaps) == \
        (bs.pose_check_flagged, bs.pose_check_rejected, bs.adapter_swaps)
    assert msg.memory_bytes == 99 and msg.frames_in == 7 and msg.queue_depth == 1 and msg.windows == es.windows


def test_diagnostics_carry_every_backend_and_engine_field():
    es, bs = _filled()
    nc = st.NodeCounters(counts={"queue_full": 4, "skipped_under_load": 1})
    d = st.diagnostic_values(es, bs, nc)
    for k in st.STATUS_FIELDS:
        assert k in d
    for f in dataclasses.fields(BackendStatus):
        key = st.BACKEND_KEY_RENAMES.get(f.name, f.name)
        assert key in d and (d[key] == getattr(bs, f.name) or key in st.STATUS_FIELDS), f.name
    for f in dataclasses.fields(EngineStatus):
        key = st.ENGINE_KEY_RENAMES.get(f.name, f.name)
        assert key in d, f.name
    assert d["backend_memory_bytes"] == bs.memory_bytes and d["engine_frames_in"] == es.frames_in
    assert d["count_queue_full"] == 4 and d["count_skipped_under_load"] == 1
    # renames only where the status message already uses the name for something else
    assert set(st.BACKEND_KEY_RENAMES) <= set(st.STATUS_FIELDS)
    assert {k for k in st.ENGINE_KEY_RENAMES if k != "last_error"} <= set(st.STATUS_FIELDS)
    assert "engine_last_error" not in st.diagnostic_values(EngineStatus(), BackendStatus(), nc)


def test_problems_and_rss():
    v = {"state": "lost"}
    p = st.diagnostic_problems(v, True, 6.0, 5.0, "/cam")
    assert len(p) == 3 and "RANDOM WEIGHTS" in p[0] and "no image since 6.0 s on /cam" in p[1]
    assert st.diagnostic_problems({"state": "mapping"}, False, 1.0, 5.0, "/cam") == []
    assert st.rss_bytes() > 1_000_000 and not math.isnan(st.rss_bytes())

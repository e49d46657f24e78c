"""selfi_ros.ros.services without a node: ~/save_map and ~/reset callbacks run through the worker command
channel; a failed save answers success=False with the folder and the reason and logs at ERROR."""
import os
import threading

import pytest

from selfi_ros.ros.services import WorkerCommands, create_services

Trigger = pytest.importorskip("std_srvs.srv").Trigger


class _Node:
    def __init__(self):
        self.callbacks = {}

    def create_service(self, srv_type, name, callback, callback_group=None):
        self.callbacks[name] = callback
        return name


class _Log:
    def __init__(self):
        self.records = []

    def info(self, msg):
        self.records.append(("INFO", msg))

    def error(self, msg):
        self.records.append(("ERROR", msg))


def _serve(commands, stop):
    while not stop.is_set():
        commands.run_pending()
        stop.wait(0.01)


@pytest.fixture
def services():
    commands, stop = WorkerCommands(), threading.Event()
    worker = threading.Thread(target=_serve, args=(commands, stop), daemon=True)
    worker.start()
    yield commands
    stop.set()
    worker.join(5)


def _call(node, name):
    return node.callbacks[name](Trigger.Request(), Trigger.Response())


def test_save_failure_is_an_error_with_reason(services, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad_dir = str(blocker / "map")  # a folder under a regular file: makedirs fails

    def save(out_dir):
        os.makedirs(out_dir, exist_ok=True)
        return {"map": os.path.join(out_dir, "map.ply")}

    node, log = _Node(), _Log()
    create_services(node, services, lambda: 0, save, bad_dir, log, None)
    r = _call(node, "~/save_map")
    assert r.success is False
    assert r.message.startswith(f"save to {bad_dir} failed: ") and ("NotADirectoryError" in r.message
                                                                   or "FileExistsError" in r.message)
    assert log.records == [("ERROR", f"~/save_map: {r.message}")]

    good = str(tmp_path / "ok")
    create_services(node, services, lambda: 0, save, good, log, None)
    r = _call(node, "~/save_map")
    assert r.success is True and r.message.startswith(f"saved to {good}: ") and os.path.isdir(good)
    assert log.records[-1] == ("INFO", f"~/save_map: {r.message}")


def test_reset_reports_dropped_frames(services):
    node, log = _Node(), _Log()
    create_services(node, services, lambda: 7, lambda d: None, "/unused", log, None)
    r = _call(node, "~/reset")
    assert r.success is True and r.message == "reset (dropped 7 queued frames)"
    assert log.records == [("INFO", "~/reset: reset (dropped 7 queued frames)")]


def _srv(name):
    srv = pytest.importorskip("selfi_ros.srv", reason="selfi_ros interfaces not built (scripts/build_interfaces.sh)")
    return getattr(srv, name)


def test_save_map_takes_a_target_folder(services, tmp_path):
    SaveMap = _srv("SaveMap")
    seen = []
    node, log = _Node(), _Log()
    create_services(node, services, lambda: 0, lambda d: seen.append(d) or "ok", str(tmp_path / "default"), log, None)
    r = node.callbacks["~/save_map"](SaveMap.Request(path=str(tmp_path / "there")), SaveMap.Response())
    assert r.success and r.path == str(tmp_path / "there") and seen == [str(tmp_path / "there")]
    r = node.callbacks["~/save_map"](SaveMap.Request(path=""), SaveMap.Response())  # empty: save_dir
    assert r.success and r.path == str(tmp_path / "default") and seen[-1] == str(tmp_path / "default")
    r = node.callbacks["~/save_map"](SaveMap.Request(path="~/x"), SaveMap.Response())
    assert r.path == os.path.join(os.path.expanduser("~"), "x")  # ~ expanded, absolute


def test_load_map_answers_success_refusal_and_unavailable(services, tmp_path):
    from selfi_ros.engine.map_store import MapLoadError

    LoadMap = _srv("LoadMap")
    calls = []

    def load(folder):
        calls.append(folder)
        if folder.endswith("bad"):
            raise MapLoadError(f"map {folder}: metadata.json is missing")
        return f"loaded {folder}/map"

    node, log = _Node(), _Log()
    create_services(node, services, lambda: 0, lambda d: None, str(tmp_path), log, None, load=load)
    r = node.callbacks["~/load_map"](LoadMap.Request(path=str(tmp_path / "good")), LoadMap.Response())
    assert r.success and r.message == f"loaded {tmp_path / 'good'}/map" and log.records[-1][0] == "INFO"
    r = node.callbacks["~/load_map"](LoadMap.Request(path=str(tmp_path / "bad")), LoadMap.Response())
    assert not r.success and r.message == (f"load of {tmp_path / 'bad'} failed: MapLoadError: map {tmp_path / 'bad'}: "
                                           "metadata.json is missing")
    assert log.records[-1] == ("ERROR", f"~/load_map: {r.message}")
    node2 = _Node()
    create_services(node2, services, lambda: 0, lambda d: None, str(tmp_path), log, None, load=None)
    r = node2.callbacks["~/load_map"](LoadMap.Request(path=""), LoadMap.Response())
    assert not r.success and r.message == "map loading not available"


def test_load_map_folder_takes_map_subfolder_and_restores_the_anchor(tmp_path):
    import json
    from types import SimpleNamespace

    import numpy as np

    from selfi_ros.ros.services import MAP_FRAME_FILE, load_map_folder

    loaded, anchors, cleared = [], [], []
    T = np.eye(4)
    T[:3, 3] = [0.3, 0.0, 0.2]
    (tmp_path / "saved" / "map").mkdir(parents=True)
    (tmp_path / "saved" / MAP_FRAME_FILE).write_text(json.dumps({"T_map_engine": T.tolist(), "anchor_frame": "base_link"}))
    sn = SimpleNamespace(
        cfg=SimpleNamespace(save_dir=""), engine=SimpleNamespace(load_map=loaded.append),
        _queue=SimpleNamespace(clear=lambda: cleared.append("queue")), input=None,
        restarts=SimpleNamespace(reset=lambda fi: cleared.append("stamps")),
        outputs=SimpleNamespace(path=SimpleNamespace(clear=lambda: cleared.append("path")),
                                map=SimpleNamespace(mark_changed=lambda: cleared.append("map")),
                                plan=SimpleNamespace(set_anchor=lambda A, f: anchors.append((np.asarray(A), f)))),
        _refresh_status=lambda: None)
    assert load_map_folder(sn, str(tmp_path / "saved")) == f"loaded {tmp_path / 'saved' / 'map'}"
    assert loaded == [str(tmp_path / "saved" / "map")] and cleared == ["queue", "stamps", "path", "map"]
    assert np.allclose(anchors[0][0], T) and anchors[0][1] == "base_link"
    with pytest.raises(FileNotFoundError):
        load_map_folder(sn, str(tmp_path / "nowhere"))

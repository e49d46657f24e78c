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

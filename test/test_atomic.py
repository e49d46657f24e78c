"""selfi_ros.atomic: files written atomically get the mode open() gives a new file (0o666 & ~umask), not
tempfile.mkstemp's 0600, both for a new path and over an existing file; contents are what was written."""
import os
import stat

import pytest

from selfi_ros import atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _writers(tmp_path):
    torch = pytest.importorskip("torch")
    t = {"a": torch.arange(6, dtype=torch.float32)}
    return [
        ("t.txt", lambda p: atomic.atomic_write_text(p, "héllo\n"), lambda p: open(p, encoding="utf-8").read() == "héllo\n"),
        ("b.bin", lambda p: atomic.atomic_write_bytes(p, b"\x00\x01\xff"), lambda p: open(p, "rb").read() == b"\x00\x01\xff"),
        ("s.safetensors", lambda p: atomic.save_safetensors(p, t, {"k": "v"}),
         lambda p: __import__("safetensors.torch", fromlist=["load_file"]).load_file(p)["a"].tolist() == list(range(6))),
        ("o.pt", lambda p: atomic.torch_save(p, {"x": 3}), lambda p: torch.load(p, weights_only=True) == {"x": 3}),
    ]


def test_new_files_get_umask_mode(tmp_path, umask022):
    for name, write, check in _writers(tmp_path):
        p = str(tmp_path / "sub" / name)
        assert write(p) == p
        assert _mode(p) == 0o644, (name, oct(_mode(p)))
        assert check(p), name
    # what open() itself gives, as the independent reference
    ref = tmp_path / "ref.txt"
    ref.write_text("x")
    assert _mode(ref) == 0o644
    assert not [f for f in os.listdir(tmp_path / "sub") if f.endswith(".tmp")]  # no temporaries left


def test_other_umask_and_existing_file(tmp_path):
    old = os.umask(0o077)
    try:
        p = str(tmp_path / "m.txt")
        atomic.atomic_write_text(p, "a")
        assert _mode(p) == 0o600
        os.umask(0o002)
        os.chmod(p, 0o600)  # an existing file's own mode is not kept: the umask mode is applied
        atomic.atomic_write_text(p, "b")
        assert _mode(p) == 0o664 and open(p).read() == "b"
        assert os.umask(0o002) == 0o002  # the umask itself is left as it was
    finally:
        os.umask(old)

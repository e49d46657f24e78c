"""COLMAP's own glog output of the colmap backend: INFO hidden unless ``verbose``, warnings and errors shown.

glog writes from C++ straight to file descriptor 2, which pytest's capture does not see reliably, so each
case runs the backend in a subprocess and reads that process's stderr.
"""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One real 4-anchor window on the sample frames plus one query, then a window of random noise, which COLMAP
# cannot reconstruct and reports with a glog WARNING ("No images with matches"); then one glog ERROR line
# through pycolmap's own glog binding (the in-memory pipeline logs none of its own on this input).
SCRIPT = r"""
import sys
import numpy as np
from selfi_ros.apps.reconstruct import frames_from_bag  # imports cv2 before pycolmap
from selfi_ros.backends.colmap import ColmapBackend
from selfi_ros.data import SAMPLE_BAG
from selfi_ros.engine.backend import BackendError
from selfi_ros.engine.types import Frame

verbose = sys.argv[1] == "1"
frames = list(frames_from_bag(SAMPLE_BAG))[:7]
b = ColmapBackend(seed=1, verbose=verbose)
win = b.reconstruct_window(0, [frames[i] for i in (0, 2, 4, 6)])
loc = b.localize([frames[3]])[0]
print("WINDOW", win.num_frames, "LOCALIZED", int(loc.extrinsics is not None), flush=True)
rng = np.random.default_rng(0)
noise = [Frame(stamp_ns=i, index=i, image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(2)]
try:
    b.reconstruct_window(1, noise)
except BackendError as e:
    print("NOISE FAILED", flush=True)
import pycolmap
pycolmap.logging.error("selfi test: an error line")
"""

# glog line prefix: severity letter, then yyyymmdd, time, thread id, file.cc:line] (from Python through
# pycolmap.logging: file:function:line])
GLOG = re.compile(r"^([IWEF])\d{8} \d\d:\d\d:\d\d\.\d+ +\d+ +[\w.<>]+(?::[\w<>]+)?:\d+\]", re.M)


def _run(verbose: bool) -> tuple[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")  # this checkout, not the installed copy
    env.pop("GLOG_minloglevel", None)
    env.pop("GLOG_v", None)
    p = subprocess.run([sys.executable, "-c", SCRIPT, "1" if verbose else "0"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stdout, p.stderr


@pytest.fixture(scope="module")
def quiet():
    return _run(False)


@pytest.fixture(scope="module")
def loud():
    return _run(True)


def _severities(stderr: str) -> list[str]:
    return GLOG.findall(stderr)


@pytest.mark.parametrize("fixture", ["quiet", "loud"])
def test_the_run_itself_works(fixture, request):
    out, _ = request.getfixturevalue(fixture)
    assert "WINDOW 4 LOCALIZED 1" in out and "NOISE FAILED" in out


def test_verbose_false_hides_colmap_info(quiet):
    _, err = quiet
    sev = _severities(err)
    assert "I" not in sev, [ln for ln in err.splitlines() if ln.startswith("I")][:5]
    assert "feature_extraction.cc" not in err and "Feature extraction" not in err


def test_verbose_false_still_shows_colmap_warnings_and_errors(quiet):
    _, err = quiet
    sev = _severities(err)
    assert "W" in sev and "E" in sev
    assert "No images with matches" in err  # the mapper's warning on the noise window
    assert "selfi test: an error line" in err


def test_verbose_true_shows_colmap_info(loud):
    _, err = loud
    sev = _severities(err)
    assert sev.count("I") >= 10  # extractor creation, the pipeline's per-image registration lines
    assert "sift.cc" in err and "incremental_pipeline.cc" in err
    assert "W" in sev and "E" in sev


def test_option_is_a_config_field_and_a_node_parameter():
    from selfi_ros.backends.config import ColmapBackendConfig, BackendConfigError, config_from_options

    assert ColmapBackendConfig().verbose is False
    assert config_from_options(ColmapBackendConfig, {"verbose": "true"}).verbose is True
    with pytest.raises(BackendConfigError):
        config_from_options(ColmapBackendConfig, {"verbose": "loud"})
    from selfi_ros.ros import params as P  # the node parameter of the same name

    assert P.configs_from_values({"backend": "colmap"}).backend.verbose is False
    assert P.configs_from_values({"backend": "colmap", "verbose": True}).backend.verbose is True

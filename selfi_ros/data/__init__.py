"""Bundled sample data: how it is made and where it lies.

``SAMPLE_DIR`` holds the committed outputs (``data/sample`` at the repository root), two samples:

* ``tum_fr1_rpy`` (the demo's default): 12 s of the REAL TUM RGB-D ``freiburg1_rpy`` sequence (Sturm et al.,
  IROS 2012, CC BY 4.0) as an MCAP bag of distorted JPEG images + CameraInfo with the plumb_bob distortion,
  its motion-capture ground truth (TUM format, 100 Hz) and the calibration YAML beside it; made by
  ``selfi-ros make-sample --tum DIR`` (:mod:`selfi_ros.data.tum`, :mod:`selfi_ros.apps.make_sample`).
* ``woodbox``: a POV-Ray rendering with exact ground truth (:mod:`selfi_ros.data.sample`).

``data/sample/README.md`` describes both and credits their sources.
"""
from __future__ import annotations

import os
import sys

_BAG_NAME = "woodbox_orbit.mcap"
_TUM_BAG_NAME = "tum_fr1_rpy.mcap"


def find_sample_dir() -> str:
    """Folder holding the samples: ``$SELFI_ROS_SAMPLE_DIR``, else ``data/sample`` of the checkout this
    package was imported from, else ``./data/sample``, else ``<prefix>/share/selfi_ros/data/sample``
    (a non-editable install). Returns the checkout path when none holds a bag (error raised by users)."""
    here = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "data", "sample"))
    cands = [os.environ.get("SELFI_ROS_SAMPLE_DIR", ""), here, os.path.join(os.getcwd(), "data", "sample"),
             os.path.join(sys.prefix, "share", "selfi_ros", "data", "sample")]
    for c in cands:
        if c and any(os.path.isfile(os.path.join(c, n)) for n in (_TUM_BAG_NAME, _BAG_NAME)):
            return os.path.abspath(c)
    return here


#: folder with the committed samples (bags, ground truth, credits)
SAMPLE_DIR = find_sample_dir()
#: the rendered sample MCAP bag (CompressedImage + CameraInfo + ground-truth PoseStamped)
SAMPLE_BAG = os.path.join(SAMPLE_DIR, _BAG_NAME)
#: ground-truth camera poses T_map_cam (OpenCV optical axes) of the rendered sample in TUM format
SAMPLE_GT_TUM = os.path.join(SAMPLE_DIR, "groundtruth.tum")

#: the real sample: 12 s of TUM RGB-D freiburg1_rpy, CompressedImage (JPEG) + CameraInfo (plumb_bob D)
TUM_SAMPLE_BAG = os.path.join(SAMPLE_DIR, _TUM_BAG_NAME)
#: its motion-capture ground truth (TUM format, 100 Hz, camera-to-world, optical axes, metres)
TUM_SAMPLE_GT = os.path.join(SAMPLE_DIR, "tum_fr1_rpy_groundtruth.txt")
#: its calibration (ROS camera_calibration YAML, the same as the bag's CameraInfo)
TUM_SAMPLE_CAMERA_YAML = os.path.join(SAMPLE_DIR, "tum_fr1_rpy_camera_info.yaml")

#: sample name -> (bag, ground truth TUM); the first is the demo's default
SAMPLES = {"tum_fr1_rpy": (TUM_SAMPLE_BAG, TUM_SAMPLE_GT), "woodbox": (SAMPLE_BAG, SAMPLE_GT_TUM)}
DEFAULT_SAMPLE = "tum_fr1_rpy"

#: topics written to the sample bags (raw images, without ``--compressed``, go to ``/camera/image_raw``)
IMAGE_TOPIC = "/camera/image_raw/compressed"
RAW_IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/pose"
#: camera optical frame (REP-103) of the sample images and the map frame of the ground truth
CAMERA_FRAME = "camera_optical_frame"
MAP_FRAME = "map"

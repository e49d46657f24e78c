"""Bundled sample data: how it is made (:mod:`selfi_ros.data.sample`) and where it lies.

``SAMPLE_DIR`` holds the committed outputs (``data/sample`` at the repository root): the MCAP bag, the
ground-truth trajectory in TUM format and the README crediting the scene.
"""
from __future__ import annotations

import os
import sys

_BAG_NAME = "woodbox_orbit.mcap"


def find_sample_dir() -> str:
    """Folder holding the sample: ``$SELFI_ROS_SAMPLE_DIR``, else ``data/sample`` of the checkout this
    package was imported from, else ``./data/sample``, else ``<prefix>/share/selfi_ros/data/sample``
    (a non-editable install). Returns the checkout path when none holds the bag (error raised by users)."""
    here = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "data", "sample"))
    cands = [os.environ.get("SELFI_ROS_SAMPLE_DIR", ""), here, os.path.join(os.getcwd(), "data", "sample"),
             os.path.join(sys.prefix, "share", "selfi_ros", "data", "sample")]
    for c in cands:
        if c and os.path.isfile(os.path.join(c, _BAG_NAME)):
            return os.path.abspath(c)
    return here


#: folder with the committed sample (bag, ground truth, credits)
SAMPLE_DIR = find_sample_dir()
#: the sample MCAP bag (CompressedImage + CameraInfo + ground-truth PoseStamped)
SAMPLE_BAG = os.path.join(SAMPLE_DIR, _BAG_NAME)
#: ground-truth camera poses T_map_cam (OpenCV optical axes) in TUM format
SAMPLE_GT_TUM = os.path.join(SAMPLE_DIR, "groundtruth.tum")

#: topics written to the sample bag
IMAGE_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/pose"
#: camera optical frame (REP-103) of the sample images and the map frame of the ground truth
CAMERA_FRAME = "camera_optical_frame"
MAP_FRAME = "map"

"""Geometry conventions, written once for the whole project.

Conventions (every public function states which it takes):

- Camera axes: OpenCV / REP-103 optical frame (x right, y down, z forward).
- ``extrinsics`` = camera-from-world ``[R | t]`` (3x4 or 4x4), so ``X_cam = R X_world + t``.
- ``T_a_b`` = 4x4 homogeneous transform taking points in frame ``b`` to frame ``a``
  (e.g. ``T_map_cam`` = camera-to-map = world-from-camera = inverse of the extrinsics).
- Quaternions in ROS order ``(x, y, z, w)``, scalar last, unit norm.
- Sim(3) ``S = (s, R, t)`` acts as ``x -> s R x + t``.
"""
from selfi_ros.geometry.se3 import (  # noqa: F401
    as_4x4,
    invert_transform,
    extrinsics_to_T_world_cam,
    T_world_cam_to_extrinsics,
    quat_xyzw_to_matrix,
    matrix_to_quat_xyzw,
    transform_points,
)

"""Model-side utilities: VGGT pose encoding and depth/point-map geometry (torch and numpy)."""
from selfi_ros.model.utils.pose_enc import (  # noqa: F401
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
)
from selfi_ros.model.utils.geometry import (  # noqa: F401
    closed_form_inverse_se3,
    depth_to_cam_points,
    depth_to_world_points,
    project_world_points,
    unproject_depth_map_to_point_map,
)

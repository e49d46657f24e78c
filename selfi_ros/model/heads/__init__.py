"""VGGT prediction heads: camera (pose encoding), DPT (depth / point map / features), tracking."""
from selfi_ros.model.heads.activations import activate_head, activate_pose, inverse_log_transform  # noqa: F401
from selfi_ros.model.heads.camera_head import CameraHead, anchor_query_mask  # noqa: F401
from selfi_ros.model.heads.dpt_head import DPTHead, uv_position_embedding  # noqa: F401
from selfi_ros.model.heads.track_head import TrackHead  # noqa: F401

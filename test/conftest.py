"""Shared test set-up (fixtures used by one test file live in that file).

Every process that starts rclpy must keep DDS discovery on this machine, so the safety variable is set
here for the test process and inherited by every subprocess a test starts.
"""
import os
import tempfile

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="selfi_ros_log_"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

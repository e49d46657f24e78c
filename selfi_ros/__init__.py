"""selfi_ros: learned multi-view reconstruction (VGGT + SAIL-Recon anchors + Selfi alignment) as a ROS 2 node.

Sub-packages (data flows one way, top to bottom):

- :mod:`selfi_ros.model`     VGGT network, checkpoint loading, preprocessing (torch only).
- :mod:`selfi_ros.geometry`  conventions and math: poses, projection, Sim(3), quaternions (numpy).
- :mod:`selfi_ros.engine`    frames, keyframes, windows/anchors, backends, chaining, scale, map.
- :mod:`selfi_ros.alignment` Selfi adapter, self-supervised training, matching, bundle adjustment.
- :mod:`selfi_ros.ros`       the rclpy node and message conversions (the only place that imports ROS).
"""

__version__ = "0.1.0"

# The generated interfaces (selfi_ros.msg, built by colcon or scripts/build_interfaces.sh) are installed
# into site-packages/selfi_ros/; let a source checkout on sys.path (tests, `python -m`) still find them.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

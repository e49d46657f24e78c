"""ROS 2 layer of selfi_ros (the only package that imports rclpy and message types).

- :mod:`selfi_ros.ros.conversions` Image / CompressedImage / CameraInfo -> Frame, PointCloud2, TF, Odometry.
- :mod:`selfi_ros.ros.params`      node parameters (EngineConfig fields + NodeConfig), config/selfi.yaml.
- :mod:`selfi_ros.ros.node`        the ``selfi_node`` rclpy node (``main``, ``node_command``).
- :mod:`selfi_ros.ros.player`      ``selfi-ros play``: MCAP bag playback through rclpy.
- :mod:`selfi_ros.ros.bag`         MCAP ROS 2 bag writing/reading (``BagWriter``, ``read_messages``).
"""

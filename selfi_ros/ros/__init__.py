"""ROS 2 layer of selfi_ros (the only package that imports rclpy and message types).

- :mod:`selfi_ros.ros.conversions` Image / CompressedImage / CameraInfo <-> numpy (re-exports the two below).
- :mod:`selfi_ros.ros.spatial`     PointCloud2, TF, PoseStamped, Odometry <-> numpy.
- :mod:`selfi_ros.ros.stamps`      ``ConversionError``, stamps <-> integer nanoseconds.
- :mod:`selfi_ros.ros.input`       messages -> validated Frames (pairing, waits, counted rejections), the frame
  queue; used by the node and by the offline tools alike.
- :mod:`selfi_ros.ros.outputs`     the node's publishers: TF (REP-105, one parent per frame, the map anchor),
  pose, odometry, path, clouds.
- :mod:`selfi_ros.ros.status`      ``SelfiStatus`` fields and ``/diagnostics`` keys, derived in one place.
- :mod:`selfi_ros.ros.services`    ``~/reset``, ``~/save_map``, ``~/load_map`` and the worker's command channel.
- :mod:`selfi_ros.ros.params`      node parameters (engine, node and backend configs), config/selfi.yaml.
- :mod:`selfi_ros.ros.node`        the ``selfi_node`` rclpy node: wiring only.
- :mod:`selfi_ros.ros.entry`       ``main`` (signals, exit codes) and ``node_command``, re-exported by ``node``.
- :mod:`selfi_ros.ros.player`      ``selfi-ros play``: MCAP bag playback through rclpy.
- :mod:`selfi_ros.ros.recorder`    records the node's outputs (demo, benchmarks).
- :mod:`selfi_ros.ros.bag`         MCAP ROS 2 bag writing/reading (``BagWriter``, ``read_messages``).
"""

"""selfi_ros: learned multi-view reconstruction (VGGT + SAIL-Recon anchors + Selfi alignment) as a ROS 2 node.

One sub-package per floor of the data flow; a module imports only from its own floor and those below it
(``test/test_layout.py`` checks it):

- :mod:`selfi_ros.apps`      the ``selfi-ros`` commands (demo, reconstruct, eval, train-adapter, make-sample).
- :mod:`selfi_ros.ros`       the rclpy node as wiring: input (messages -> ``Frame``), outputs, status, services,
  parameters, MCAP bags, player, recorder. The only floor that imports ROS.
- :mod:`selfi_ros.backends`  implementations of the engine's ``Backend`` protocol (colmap, vggt + its Selfi glue,
  oracle), their config dataclasses and the registry.
- :mod:`selfi_ros.engine`    stream logic: frames, keyframes, windows and recovery, chaining, scale, map, status.
  No torch, no ROS.
- :mod:`selfi_ros.alignment` Selfi: adapter, pseudo ground truth, loss, trainer, matching, PnP, bundle adjustment.
- :mod:`selfi_ros.model`     the VGGT network, checkpoint loading, preprocessing, SAIL-Recon passes (torch only).
- :mod:`selfi_ros.geometry`  conventions and math: SE(3), Sim(3), projection, quaternions (numpy).
- :mod:`selfi_ros.data`      the bundled sample and real views: how they are made and where they lie.
- :mod:`selfi_ros.atomic`    atomic file writes; :mod:`selfi_ros.cli` the command dispatcher.
"""

__version__ = "0.1.0"

# The generated interfaces (selfi_ros.msg, built by colcon or scripts/build_interfaces.sh) are installed
# into site-packages/selfi_ros/; let a source checkout on sys.path (tests, `python -m`) still find them.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

"""Run-time parameter changes of ``selfi_node`` (``ros2 param set``, the ``rcl_interfaces/SetParameters``
service): the parameters of :data:`~selfi_ros.ros.params.DYNAMIC_PARAMETERS` are applied, every other
one is refused with ``"<name> is read-only at run time: restart the node"``, and an invalid value is
refused with the validation message of :func:`~selfi_ros.ros.params.configs_from_values`. A refused
change leaves the parameter (``get_parameters``) and the node as they were; rclpy applies the change
only when the callback returns ``successful=True`` (``Node.add_on_set_parameters_callback``,
rclpy/node.py).

What a change does:

* ``publish_tf``: the TF mode of the next pose (``NodeOutputs.set_tf_mode``; ``auto`` resolved again).
* ``save_dir``: the folder of the next ``~/save_map`` (the service reads it at each call);
  ``save_on_shutdown``: read at shutdown.
* ``status_period_s``: the status timer is recreated with the new period; ``~/path`` follows it.
* ``map_publish_period_s``, ``log_throttle_s``, ``no_image_warn_s``, ``publish_window_cloud``: read by the
  worker and the publishers at each use.
* ``keyframe_min_interval_s`` / ``keyframe_max_interval_s`` / ``keyframe_min_flow_px`` /
  ``keyframe_min_odom_dist_m``: handed to the engine's worker thread, which applies them before its next
  frame (the engine is only ever touched by that thread); the keyframe selector keeps its last keyframe.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Optional

from selfi_ros.ros.params import (DYNAMIC_PARAMETERS, NodeConfig, NodeParameters, check_parameter_update,
                                  parameter_specs)

KEYFRAME_PARAMETERS = ("keyframe_min_interval_s", "keyframe_max_interval_s", "keyframe_min_flow_px",
                       "keyframe_min_odom_dist_m")
_NODE_FIELDS = {f.name for f in dataclasses.fields(NodeConfig)}


class RuntimeParameters:
    """The ``on_set_parameters`` callback of a :class:`~selfi_ros.ros.node.SelfiNode` and the hand-over of
    engine changes to its worker thread.

    Args:
        sn: the SelfiNode (its ``node``, ``cfg``, ``outputs``, ``engine``, ``timer_status``, ``log``).
    """

    def __init__(self, sn) -> None:
        self.sn = sn
        self._names = [s.name for s in parameter_specs()]
        self._lock = threading.Lock()
        self._keyframes: Optional[dict] = None  # thresholds waiting for the worker
        self.applied = 0  # accepted changes (parameters)

    def on_set(self, params):
        """rclpy callback: validate ``params`` (a list of ``rclpy.parameter.Parameter``) as one change and
        apply it, or refuse it with a reason; returns an ``rcl_interfaces/SetParametersResult``."""
        from rcl_interfaces.msg import SetParametersResult

        n = self.sn.node
        current = {name: n.get_parameter(name).value for name in self._names}
        updates = {p.name: p.value for p in params}
        try:
            new = check_parameter_update(current, updates)
        except ValueError as e:
            self.sn.log.warning(f"parameter change refused: {e}")
            return SetParametersResult(successful=False, reason=str(e))
        changed = [k for k in updates if k in DYNAMIC_PARAMETERS and updates[k] != current.get(k)]
        self._apply(new, changed)
        return SetParametersResult(successful=True)

    def _apply(self, new: NodeParameters, changed: list) -> None:
        sn = self.sn
        for name in changed:
            if name in _NODE_FIELDS:
                setattr(sn.cfg, name, getattr(new.node, name))  # one object shared with the outputs
        if "publish_tf" in changed:
            sn.outputs.set_tf_mode(new.node.publish_tf)
        if "status_period_s" in changed:
            from rclpy.clock import Clock, ClockType

            sn.outputs.path.min_period_s = new.node.status_period_s
            sn.node.destroy_timer(sn.timer_status)
            sn.timer_status = sn.node.create_timer(new.node.status_period_s, sn._publish_status,
                                                   clock=Clock(clock_type=ClockType.STEADY_TIME))
        if any(k in KEYFRAME_PARAMETERS for k in changed):
            with self._lock:
                self._keyframes = {k: getattr(new.engine, k) for k in KEYFRAME_PARAMETERS}
        self.applied += len(changed)
        if changed:
            values = {k: getattr(new.node if k in _NODE_FIELDS else new.engine, k) for k in changed}
            sn.log.info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))

    def apply_engine_updates(self) -> None:
        """Worker thread, between frames: give the engine the keyframe thresholds changed since the last
        call (``Engine.config`` becomes a copy with them, so that a ``~/reset`` keeps them; the selector
        keeps its last keyframe, :meth:`KeyframeSelector.set_thresholds
        <selfi_ros.engine.keyframes.KeyframeSelector.set_thresholds>`)."""
        with self._lock:
            kf, self._keyframes = self._keyframes, None
        if kf is None:
            return
        eng = self.sn.engine
        if not hasattr(eng, "selector"):  # a stand-in engine (tests) without keyframe selection
            return
        eng.config = dataclasses.replace(eng.config, **kf)
        eng.selector.set_thresholds(kf["keyframe_min_interval_s"], kf["keyframe_max_interval_s"],
                                    kf["keyframe_min_flow_px"], kf["keyframe_min_odom_dist_m"])


def declare_model_info(node, random_weights: bool) -> None:
    """Declare the read-only parameter ``model_random_weights`` on an rclpy ``node`` (``ros2 param get
    /selfi_node model_random_weights``): a frame-independent flag for outputs that cannot carry one (TF,
    PointCloud2, Path). Overrides are ignored: it reports the backend that was built, it does not configure
    it; a change is refused by rclpy (``read_only`` descriptor)."""
    from rcl_interfaces.msg import ParameterDescriptor

    desc = ParameterDescriptor(read_only=True, description=(
        "read-only: true when the backend model has RANDOM weights (every output is meaningless)"))
    node.declare_parameter("model_random_weights", bool(random_weights), desc, ignore_override=True)

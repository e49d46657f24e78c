"""ROS parameters of ``selfi_node``: every field of :class:`~selfi_ros.engine.config.EngineConfig`, of the
node's own :class:`NodeConfig` and of every backend config in
:data:`~selfi_ros.backends.config.NODE_BACKEND_CONFIGS` (same names, declared automatically from the
dataclasses; a name shared by two backend configs is one parameter, with the same type and default).

The backend named by the ``backend`` parameter is built from its own config only
(:func:`make_backend_from_config`); the other backends' parameters are declared but unused.
``config/selfi.yaml`` holds all of them with their defaults (``selfi_node: ros__parameters:``), grouped per
config; :func:`default_parameters` is the single source of those defaults and a test keeps the YAML, the
declared parameters, ``launch/selfi.launch.py`` and the README table in agreement. Importing this module
needs no ROS.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from selfi_ros.backends.config import (NODE_BACKEND_CONFIGS, BackendConfigError, VGGTBackendConfig,
                                       config_from_options)
from selfi_ros.engine.config import EngineConfig

NODE_NAME = "selfi_node"

IMAGE_TRANSPORTS = ("raw", "compressed")
QOS_PROFILES = ("sensor_data", "reliable")
TIME_JUMP_ACTIONS = ("new_map", "relocalize")
TF_MODES = ("auto", "map_to_camera", "map_to_odom", "map_to_base_link", "none")


@dataclass
class NodeConfig:
    """Parameters of the ROS node itself (topics, frames, QoS, backend choice, rates). Units in comments.
    The backend options are the fields of the backend configs (:mod:`selfi_ros.backends.config`)."""

    # inputs
    image_topic: str = "/camera/image_raw"  # sensor_msgs/Image topic (compressed: <image_topic>/compressed)
    camera_info_topic: str = "/camera/camera_info"  # sensor_msgs/CameraInfo topic
    image_transport: str = "raw"  # raw | compressed (sensor_msgs/CompressedImage, jpeg or png)
    odom_topic: str = ""  # optional nav_msgs/Odometry topic (metric scale, map->odom); empty = none
    qos: str = "sensor_data"  # image/camera_info QoS: sensor_data (best effort) | reliable
    qos_depth: int = 10  # QoS history depth of the input subscriptions (messages)
    sync_threshold_ms: float = 5.0  # max |image stamp - camera_info stamp| for a match (ms)
    camera_info_wait_s: float = 0.5  # wait this long for a matching CameraInfo, then use the latest (s)
    camera_info_timeout_s: float = 5.0  # no CameraInfo at all after this long: run with K unknown (s)
    no_image_warn_s: float = 5.0  # diagnostics warn when no image arrived for this long (s)
    min_image_size_px: int = 32  # images narrower or lower than this are rejected, image_too_small (px)
    resolution_change_frames: int = 5  # a new image size starts a new map after this many images of it in a row
    rectify: bool = True  # undistort images with the CameraInfo D, R, P; false: already rectified (image_rect), K = P
    time_jump_threshold_s: float = 1.0  # a stamp this far before the last one is a time jump, not a late frame (s)
    time_jump_action: str = "new_map"  # after a time jump: new_map (reset the engine) or relocalize (keep the map, relocalize in it)
    # frames (REP-105 / REP-103)
    map_frame: str = "map"  # fixed frame of poses and clouds
    odom_frame: str = "odom"  # odometry frame (map -> odom mode)
    base_frame: str = "base_link"  # robot base frame
    camera_frame: str = ""  # camera optical frame; empty = the image header frame_id
    publish_tf: str = "auto"  # auto | map_to_camera | map_to_odom | map_to_base_link | none
    tf_static_timeout_s: float = 2.0  # auto mode waits this long for base_frame -> camera on /tf_static (s)
    # backend (its options are the parameters of its config, selfi_ros.backends.config)
    backend: str = "colmap"  # colmap / vggt / oracle / <module>:<Class> (a plug-in, built without options)
    # queue and outputs
    queue_size: int = 4  # frames waiting for the engine worker; when full, one is dropped keeping time coverage (frames)
    path_max_length: int = 2000  # poses kept in nav_msgs/Path (poses)
    map_publish_period_s: float = 2.0  # ~/map_cloud republish period when subscribed (s)
    status_period_s: float = 1.0  # ~/status and /diagnostics period (s)
    publish_window_cloud: bool = True  # publish ~/window_cloud after each window
    save_dir: str = ""  # ~/save_map output folder; empty = $ROS_HOME/selfi_map (default ~/.ros/selfi_map)
    save_on_shutdown: bool = False  # save the map to save_dir on SIGINT / SIGTERM
    map_path: str = ""  # a folder written by ~/save_map, loaded at start (Engine.load_map); empty = none
    log_throttle_s: float = 5.0  # min period of repeated warnings of one kind (s)


def _field_comments(cls: type) -> dict[str, str]:
    """``name -> trailing comment`` of a dataclass's field lines (used as parameter descriptions)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+)\s*:\s*[^=\n]+=[^#\n]*#\s*(.+)$", src, flags=re.M):
        out[m.group(1)] = m.group(2).strip()
    return out


@dataclass
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: parameter name (= the config field name).
        default: default value (its Python type bool, int, float or str is the parameter type).
        description: the field's trailing comment (unit in parentheses).
        group: the config it feeds: ``"engine"``, ``"node"`` or ``"backend:<name>"``.
        backends: for a backend option, every backend whose config has it (a shared name is one parameter).
    """

    name: str
    default: Any
    description: str
    group: str
    backends: tuple = ()


def group_heading(group: str) -> str:
    """Heading of a parameter group (``engine``, ``node``, ``backend:<name>``)."""
    if group == "engine":
        return "engine (EngineConfig)"
    if group == "node":
        return "node (NodeConfig)"
    name = group.split(":", 1)[1]
    return f"{name} backend ({NODE_BACKEND_CONFIGS[name].__name__})"


def _specs_of(cls: type, group: str) -> list[ParamSpec]:
    comments = _field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            raise RuntimeError(f"{cls.__name__}.{f.name} needs a default to be a ROS parameter")
        if type(f.default) not in (bool, int, float, str):
            raise RuntimeError(f"{cls.__name__}.{f.name}: type {type(f.default).__name__} cannot be a ROS parameter")
        out.append(ParamSpec(f.name, f.default, comments.get(f.name, ""), group))
    return out


def parameter_specs() -> list[ParamSpec]:
    """All parameters of ``selfi_node``: engine, node, then each backend's options (a name shared by two
    backend configs once, in the group of the first, with every backend listed in ``backends``).

    Raises:
        RuntimeError: a name used by two of EngineConfig, NodeConfig and a backend config, a shared backend
            option whose type or default differs between configs, or a field without a default / of a type
            other than bool, int, float, str.
    """
    specs = _specs_of(EngineConfig, "engine") + _specs_of(NodeConfig, "node")
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"parameter names used by both EngineConfig and NodeConfig: {sorted(dup)}")
    taken = set(names)
    backend_specs: dict[str, ParamSpec] = {}
    descriptions: dict[str, list] = {}
    for bname, cls in NODE_BACKEND_CONFIGS.items():
        for s in _specs_of(cls, f"backend:{bname}"):
            if s.name in taken:
                raise RuntimeError(f"{cls.__name__}.{s.name} is also an engine or node parameter")
            prev = backend_specs.get(s.name)
            if prev is None:
                s.backends = (bname,)
                backend_specs[s.name] = s
                descriptions[s.name] = [(bname, s.description)]
            elif type(prev.default) is not type(s.default) or prev.default != s.default:
                raise RuntimeError(f"backend option {s.name!r}: {prev.backends[0]} has {prev.default!r}, {bname} has "
                                   f"{s.default!r}; a shared name needs the same type and default")
            else:
                prev.backends += (bname,)
                descriptions[s.name].append((bname, s.description))
    for s in backend_specs.values():
        d = descriptions[s.name]
        if len(d) > 1:  # one parameter for several backends: say what it means to each
            s.description = "; ".join(f"{b}: {text}" for b, text in d)
    return specs + list(backend_specs.values())


def default_parameters() -> dict[str, Any]:
    """``name -> default`` of every parameter, plus ``use_sim_time`` (declared by rclpy itself)."""
    out = {s.name: s.default for s in parameter_specs()}
    out["use_sim_time"] = False
    return out


def default_yaml_dict() -> dict:
    """The content of ``config/selfi.yaml``: ``{selfi_node: {ros__parameters: defaults}}``."""
    return {NODE_NAME: {"ros__parameters": default_parameters()}}


def _coerce(value: Any, default: Any, name: str) -> Any:
    t = type(default)
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, t) or (t is int and isinstance(value, bool)):
        raise ValueError(f"parameter {name!r} must be {t.__name__}, got {value!r}")
    return value


def validate_node_config(cfg: NodeConfig) -> NodeConfig:
    """Check enumerated and positive parameters.

    Raises:
        ValueError: naming the parameter and its allowed values.
    """
    for name, allowed in (("image_transport", IMAGE_TRANSPORTS), ("qos", QOS_PROFILES), ("publish_tf", TF_MODES),
                          ("time_jump_action", TIME_JUMP_ACTIONS)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"parameter {name}={getattr(cfg, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("qos_depth", "queue_size", "path_max_length", "min_image_size_px", "resolution_change_frames"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"parameter {name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("map_publish_period_s", "status_period_s", "time_jump_threshold_s"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"parameter {name} must be > 0, got {getattr(cfg, name)}")
    if not cfg.image_topic or not cfg.map_frame:
        raise ValueError("parameters image_topic and map_frame must not be empty")
    if not cfg.backend:
        raise ValueError("parameter backend must not be empty")
    return cfg


def validate_engine_config(cfg: EngineConfig) -> EngineConfig:
    """Check the engine parameters that would make the engine fail to start or misbehave.

    Raises:
        ValueError: naming the parameter.
    """
    if cfg.window_size < 2:
        raise ValueError(f"parameter window_size must be >= 2, got {cfg.window_size}")
    if not 0 <= cfg.window_overlap < cfg.window_size:
        raise ValueError(f"parameter window_overlap must be in [0, window_size={cfg.window_size}), "
                         f"got {cfg.window_overlap}")
    if cfg.keyframe_buffer_size < cfg.window_size:
        raise ValueError(f"parameter keyframe_buffer_size ({cfg.keyframe_buffer_size}) must be >= window_size "
                         f"({cfg.window_size})")
    if not cfg.voxel_size > 0:
        raise ValueError(f"parameter voxel_size must be > 0, got {cfg.voxel_size}")
    for name in ("max_map_points", "max_trajectory_poses", "odometry_buffer_size", "localize_batch_size",
                 "window_max_keyframes", "lost_after_failures", "scale_min_pairs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"parameter {name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("keyframe_min_interval_s", "keyframe_max_interval_s", "max_held_frames", "chain_points_per_anchor",
                 "max_points_per_window", "odometry_max_gap_s", "scale_min_baseline_m"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"parameter {name} must be >= 0, got {getattr(cfg, name)}")
    return cfg


class NodeParameters(NamedTuple):
    """The configs built from the node's parameters (unpacks as ``node, engine, backend``).

    Attributes:
        node: the node's own parameters.
        engine: the engine parameters.
        backend: the config of the backend named by ``node.backend`` (a
            :data:`~selfi_ros.backends.config.NODE_BACKEND_CONFIGS` class), or None for a backend without
            one (``oracle``, a ``module:Class`` plug-in).
    """

    node: NodeConfig
    engine: EngineConfig
    backend: Optional[Any]


def _backend_config(backend: str, values: dict[str, Any]):
    """The config of backend ``backend`` from ``name -> value`` (its own options only, already of their
    parameter types as :func:`configs_from_values` makes them; missing ones take their defaults), or None
    when the backend has no config class.

    Raises:
        ValueError: a value out of range, naming the parameter.
    """
    cls = NODE_BACKEND_CONFIGS.get(backend)
    if cls is None:
        return None
    opts = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
    try:
        return config_from_options(cls, opts)
    except BackendConfigError as e:
        raise ValueError(f"parameters of backend {backend}: {e}") from None


def configs_from_values(values: dict[str, Any]) -> NodeParameters:
    """Build the node, engine and backend configs from ``name -> value`` (missing names take defaults; ints
    are accepted for float parameters). Only the options of the backend named by ``backend`` are
    validated and used.

    Raises:
        ValueError: unknown-typed or invalid value, naming the parameter.
    """
    kw: dict[str, dict] = {"engine": {}, "node": {}}
    typed = {}  # every given parameter, of its type
    for s in parameter_specs():
        if s.name in values:
            typed[s.name] = v = _coerce(values[s.name], s.default, s.name)
            if s.group in kw:
                kw[s.group][s.name] = v
    node = validate_node_config(NodeConfig(**kw["node"]))
    engine = validate_engine_config(EngineConfig(**kw["engine"]))
    backend = _backend_config(node.backend, typed)
    if (isinstance(backend, VGGTBackendConfig) and backend.online_adapter_training
            and backend.online_clip_len > engine.window_size):
        raise ValueError(f"parameter online_clip_len ({backend.online_clip_len}) must be <= window_size "
                         f"({engine.window_size}): a clip is taken from one window")
    return NodeParameters(node, engine, backend)


#: The parameters that may change while the node runs (``ros2 param set``, the ``SetParameters`` service);
#: every other parameter of :func:`parameter_specs` is read-only at run time (refused: restart the node).
#: Node ones take effect at once (the TF mode from the next pose, ``save_dir`` from the next
#: ``~/save_map``, the status timer is recreated); the engine's keyframe thresholds before the next frame
#: (applied in the engine's worker thread, the keyframe selector's state is kept).
DYNAMIC_PARAMETERS = ("publish_tf", "save_dir", "save_on_shutdown", "status_period_s", "map_publish_period_s", "log_throttle_s",
                      "no_image_warn_s", "publish_window_cloud", "keyframe_min_interval_s",
                      "keyframe_max_interval_s", "keyframe_min_flow_px", "keyframe_min_odom_dist_m")


def read_only_reason(name: str) -> str:
    """The refusal of a run-time change of a parameter that is not in :data:`DYNAMIC_PARAMETERS`."""
    return f"{name} is read-only at run time: restart the node"


def check_parameter_update(current: dict[str, Any], updates: dict[str, Any]) -> NodeParameters:
    """Validate a run-time change of parameters: the configs the node would have after it.

    Args:
        current: ``name -> value`` of the node's parameters now (every declared one).
        updates: ``name -> new value``; names that are not parameters of :func:`parameter_specs`
            (``use_sim_time``, rclpy's own) are ignored here.

    Raises:
        ValueError: the first update of a parameter not in :data:`DYNAMIC_PARAMETERS`
            (:func:`read_only_reason`), or the validation message of :func:`configs_from_values` for the
            merged values (wrong type, value out of range, unknown ``publish_tf`` mode...).
    """
    names = {s.name for s in parameter_specs()}
    mine = {k: v for k, v in updates.items() if k in names}
    for name in mine:
        if name not in DYNAMIC_PARAMETERS:
            raise ValueError(read_only_reason(name))
    return configs_from_values({**{k: v for k, v in current.items() if k in names}, **mine})


def declare_parameters(node) -> NodeParameters:
    """Declare every parameter on an rclpy ``node`` (typed by its default, with its description) and
    return the configs built from the values the node was started with (YAML, ``-p``, launch).

    Raises:
        ValueError: invalid values (see :func:`configs_from_values`).
    """
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterException

    values = {}
    for s in parameter_specs():
        desc = ParameterDescriptor(description=s.description)
        if isinstance(s.default, float):
            # accept integer literals for float parameters (e.g. `-p voxel_size:=1`)
            desc.dynamic_typing = True
        try:
            p = node.declare_parameter(s.name, s.default, desc)
        except ParameterException as e:  # e.g. `-p window_size:=abc`: rclpy's type check, one clear line
            raise ValueError(f"parameter {s.name!r} must be {type(s.default).__name__}, got "
                             f"{_override_value(node, s.name, e)}") from None
        values[s.name] = p.value
    return configs_from_values(values)


def _override_value(node, name: str, error: Exception) -> str:
    """The value an override gave parameter ``name`` (for the message of a refused override), else the
    rclpy error text."""
    try:
        p = node._parameter_overrides[name]  # rclpy keeps the --ros-args / params-file values here
        return f"{p.value!r} ({p.type_.name.lower()})"
    except Exception:  # noqa: BLE001 - private rclpy attribute: fall back on its message
        return str(error)


def unknown_overrides(node) -> list[str]:
    """Names given to the node (``-p``, a params file) that are not parameters of ``selfi_node`` (typos,
    parameters of another version): they are ignored by rclpy, the node warns about them."""
    declared = {s.name for s in parameter_specs()} | {"use_sim_time", "model_random_weights"}
    try:
        given = list(node._parameter_overrides)
    except Exception:  # noqa: BLE001 - private rclpy attribute
        return []
    return sorted(n for n in given if n not in declared and not n.startswith("qos_overrides."))


def check_topic_names(cfg: NodeConfig) -> None:
    """Raise ValueError naming the parameter when a topic parameter is not a valid ROS topic name (rclpy's
    own check, whose exception would not name it)."""
    from rclpy.exceptions import NameValidationException
    from rclpy.validate_topic_name import validate_topic_name

    for name in ("image_topic", "camera_info_topic", "odom_topic"):
        value = getattr(cfg, name)
        if not value:
            continue
        try:
            validate_topic_name(value)
        except NameValidationException as e:
            raise ValueError(f"parameter {name}={value!r}: {str(e).splitlines()[0].rstrip(':')}") from None


def make_backend_from_config(cfg: NodeConfig, backend_config=None):
    """The backend named by ``cfg.backend``: a registry name (``colmap``, ``vggt``, ``oracle``) built from
    ``backend_config`` (its config from :func:`configs_from_values`; None: its defaults), or
    ``package.module:Class`` (tests, plug-ins) built without arguments.

    Raises:
        ValueError: unknown backend, a plug-in module or class that cannot be imported (naming the
            ``backend`` parameter); the backend's own ValueErrors (invalid options, unusable checkpoint; a
            missing checkpoint is prefixed with ``parameter checkpoint=...``). Other errors of the backend
            are not caught.
    """
    if ":" in cfg.backend:
        mod, cls = cfg.backend.split(":", 1)
        try:
            ctor = getattr(importlib.import_module(mod), cls)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"parameter backend={cfg.backend!r}: cannot import {cls} from {mod}: "
                             f"{type(e).__name__}: {e}") from None
        return ctor()
    from selfi_ros.backends import make_backend

    try:
        return make_backend(cfg.backend, config=backend_config)
    except ValueError as e:
        if type(e).__name__ == "WeightsNotFoundError" and not getattr(backend_config, "checkpoint", ""):
            raise ValueError(f"parameter checkpoint='' (backend {cfg.backend}): {e}") from None
        if str(e).startswith("unknown backend"):
            raise ValueError(f"parameter backend={cfg.backend!r}: {e}") from None
        raise


def render_yaml() -> str:
    """``config/selfi.yaml`` text: every parameter with its default and its description as a comment
    (``python -m selfi_ros.ros.params > config/selfi.yaml``)."""
    import yaml

    lines = [
        "# Parameters of selfi_node with their defaults (generated by `python -m selfi_ros.ros.params`;",
        "# test/test_params.py checks this file against the declared parameters).",
        f"{NODE_NAME}:",
        "  ros__parameters:",
        "    use_sim_time: false  # use /clock (bag replay with --clock)",
    ]
    group = None
    for s in parameter_specs():
        if s.group != group:
            group = s.group
            lines.append(f"    # --- {group_heading(group)}")
        val = yaml.safe_dump(s.default, default_flow_style=True).strip()
        if val.endswith("\n..."):
            val = val[:-4].strip()
        val = val.replace("\n...", "").strip()
        if isinstance(s.default, float) and "." not in val and "e" not in val.lower():
            val += ".0"
        lines.append(f"    {s.name}: {val}" + (f"  # {s.description}" if s.description else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_yaml(), end="")

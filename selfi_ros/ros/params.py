"""ROS parameters of ``selfi_node``: every :class:`~selfi_ros.engine.engine.EngineConfig` field (same name,
declared automatically from the dataclass) plus the node's own :class:`NodeConfig`.

``config/selfi.yaml`` holds all of them with their defaults (``selfi_node: ros__parameters:``);
:func:`default_parameters` is the single source of those defaults and a test keeps the YAML, the declared
parameters and ``launch/selfi.launch.py`` in agreement. Importing this module needs no ROS.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any

from selfi_ros.engine.engine import EngineConfig

NODE_NAME = "selfi_node"

IMAGE_TRANSPORTS = ("raw", "compressed")
QOS_PROFILES = ("sensor_data", "reliable")
TF_MODES = ("auto", "map_to_camera", "map_to_odom", "map_to_base_link", "none")
POSE_CHECK_MODES = ("auto", "off", "flag", "reject")


@dataclass
class NodeConfig:
    """Parameters of the ROS node itself (topics, frames, QoS, backend choice, rates). Units in comments."""

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
    # frames (REP-105 / REP-103)
    map_frame: str = "map"  # fixed frame of poses and clouds
    odom_frame: str = "odom"  # odometry frame (map -> odom mode)
    base_frame: str = "base_link"  # robot base frame
    camera_frame: str = ""  # camera optical frame; empty = the image header frame_id
    publish_tf: str = "auto"  # auto | map_to_camera | map_to_odom | map_to_base_link | none
    tf_static_timeout_s: float = 2.0  # auto mode waits this long for base_frame -> camera on /tf_static (s)
    # backend
    backend: str = "colmap"  # colmap | vggt | oracle | <module>:<Class>
    checkpoint: str = ""  # model weights file (vggt)
    allow_random_weights: bool = False  # vggt without weights: PLUMBING ONLY, outputs are meaningless
    model_config: str = ""  # model size preset / config file (vggt)
    device: str = "cpu"  # torch device (vggt): cpu | cuda | cuda:N
    tokens_per_anchor: int = 0  # scene-memory tokens kept per anchor (vggt); 0 = backend default
    image_width: int = 0  # model input width (px); 0 = backend default
    memory_store_dir: str = ""  # vggt: folder keeping evicted window scene memories for relocalization; empty = off
    memory_store_windows: int = 0  # vggt: bound on stored scene memories (windows, oldest deleted); 0 = backend default (8)
    torch_threads: int = 0  # vggt: torch CPU threads (1 is best on small/shared CPUs); 0 = torch default (all cores)
    # Selfi alignment (vggt backend, needs a trained adapter: `selfi-ros train-adapter`)
    adapter: str = ""  # vggt: Selfi feature adapter (adapter.safetensors); empty = none
    pose_check: str = "auto"  # learned pose vs aligned-feature PnP: auto (flag with an adapter) | off | flag | reject
    pose_check_max_rot_deg: float = 5.0  # pose check: max rotation disagreement (deg)
    pose_check_max_rel_trans: float = 0.1  # pose check: max camera-centre disagreement / median anchor depth
    refine_window: bool = False  # bundle-adjust each window on aligned matches + Selfi affine depth correction
    online_adapter_training: bool = False  # train the adapter in the background on own keyframes while idle
    online_clip_len: int = 6  # online training: keyframes per clip, taken from one window (<= window_size)
    online_eval_every: int = 50  # online training: steps between held-out evaluations
    online_min_gain: float = 0.005  # online training: held-out PCK@3 gain needed to swap the adapter in
    # queue and outputs
    queue_size: int = 4  # frames waiting for the engine worker; when full, one is dropped keeping time coverage (frames)
    path_max_length: int = 2000  # poses kept in nav_msgs/Path (poses)
    map_publish_period_s: float = 2.0  # ~/map_cloud republish period when subscribed (s)
    status_period_s: float = 1.0  # ~/status and /diagnostics period (s)
    publish_window_cloud: bool = True  # publish ~/window_cloud after each window
    save_dir: str = ""  # ~/save_map output folder; empty = $ROS_HOME/selfi_map (default ~/.ros/selfi_map)
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
    """One declared parameter: name, default value (its Python type is the parameter type), description,
    and which config it feeds (``"engine"`` or ``"node"``)."""

    name: str
    default: Any
    description: str
    group: str


def parameter_specs() -> list[ParamSpec]:
    """All parameters of ``selfi_node`` (engine fields first), in declaration order.

    Raises:
        RuntimeError: when an EngineConfig field name collides with a NodeConfig one, or a field has no
            default / a type other than bool, int, float, str.
    """
    specs: list[ParamSpec] = []
    for group, cls in (("engine", EngineConfig), ("node", NodeConfig)):
        comments = _field_comments(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING:
                raise RuntimeError(f"{cls.__name__}.{f.name} needs a default to be a ROS parameter")
            if type(f.default) not in (bool, int, float, str):
                raise RuntimeError(f"{cls.__name__}.{f.name}: type {type(f.default).__name__} cannot be a ROS parameter")
            specs.append(ParamSpec(f.name, f.default, comments.get(f.name, ""), group))
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"parameter names used by both EngineConfig and NodeConfig: {sorted(dup)}")
    return specs


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
                          ("pose_check", POSE_CHECK_MODES)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"parameter {name}={getattr(cfg, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("qos_depth", "queue_size", "path_max_length"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"parameter {name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("map_publish_period_s", "status_period_s"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"parameter {name} must be > 0, got {getattr(cfg, name)}")
    if not cfg.adapter and (cfg.pose_check in ("flag", "reject") or cfg.refine_window or cfg.online_adapter_training):
        raise ValueError("parameters pose_check=flag/reject, refine_window and online_adapter_training need "
                         "the parameter adapter (a trained adapter.safetensors, vggt backend)")
    for name in ("online_clip_len", "online_eval_every"):
        if getattr(cfg, name) < (2 if name == "online_clip_len" else 1):
            raise ValueError(f"parameter {name} is too small: {getattr(cfg, name)}")
    if not cfg.image_topic or not cfg.map_frame:
        raise ValueError("parameters image_topic and map_frame must not be empty")
    return cfg


def configs_from_values(values: dict[str, Any]) -> tuple[NodeConfig, EngineConfig]:
    """Build (NodeConfig, EngineConfig) from ``name -> value`` (missing names take defaults; ints are
    accepted for float parameters).

    Raises:
        ValueError: wrong type or invalid value (see :func:`validate_node_config`).
    """
    node_kw, eng_kw = {}, {}
    for s in parameter_specs():
        if s.name in values:
            (eng_kw if s.group == "engine" else node_kw)[s.name] = _coerce(values[s.name], s.default, s.name)
    return validate_node_config(NodeConfig(**node_kw)), EngineConfig(**eng_kw)


def declare_parameters(node) -> tuple[NodeConfig, EngineConfig]:
    """Declare every parameter on an rclpy ``node`` (typed by its default, with its description) and
    return the configs built from the values the node was started with (YAML, ``-p``, launch).

    Raises:
        ValueError: invalid values (see :func:`configs_from_values`).
    """
    from rcl_interfaces.msg import ParameterDescriptor

    values = {}
    for s in parameter_specs():
        desc = ParameterDescriptor(description=s.description)
        if isinstance(s.default, float):
            # accept integer literals for float parameters (e.g. `-p voxel_size:=1`)
            desc.dynamic_typing = True
        p = node.declare_parameter(s.name, s.default, desc)
        values[s.name] = p.value
    return configs_from_values(values)


def backend_options(cfg: NodeConfig) -> dict[str, Any]:
    """Backend keyword options that were set (non-empty / non-zero / True) - backends take only their own,
    so unset options are not passed."""
    opts = {}
    for k in ("checkpoint", "allow_random_weights", "model_config", "device", "tokens_per_anchor", "image_width",
              "memory_store_dir", "memory_store_windows", "torch_threads"):
        v = getattr(cfg, k)
        if k == "device" and v == "cpu":
            continue
        if v not in ("", 0, False):
            opts[k] = v
    if cfg.adapter:  # Selfi alignment options exist only on the vggt backend: passed with an adapter only
        opts.update(adapter=cfg.adapter, pose_check=cfg.pose_check, pose_check_max_rot_deg=cfg.pose_check_max_rot_deg,
                    pose_check_max_rel_trans=cfg.pose_check_max_rel_trans, refine_window=cfg.refine_window)
    return opts


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
            lines.append(f"    # --- {'engine (EngineConfig)' if group == 'engine' else 'node (NodeConfig)'}")
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

"""Parameters: config/selfi.yaml <-> the parameters selfi_node declares <-> launch/selfi.launch.py."""
import ast
import dataclasses
import os

import pytest
import yaml

from selfi_ros.backends.config import NODE_BACKEND_CONFIGS, ColmapBackendConfig, VGGTBackendConfig
from selfi_ros.engine.config import EngineConfig
from selfi_ros.ros import params as P

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_engine_field_is_a_parameter():
    names = {s.name for s in P.parameter_specs()}
    assert {f.name for f in dataclasses.fields(EngineConfig)} <= names
    assert {f.name for f in dataclasses.fields(P.NodeConfig)} <= names
    for cls in NODE_BACKEND_CONFIGS.values():
        assert {f.name for f in dataclasses.fields(cls)} <= names
    assert len(names) == len(P.parameter_specs())  # each name declared once
    assert not {"checkpoint", "device", "adapter", "max_num_features"} & {f.name for f in dataclasses.fields(P.NodeConfig)}


def test_shared_backend_options_have_one_type_and_default(monkeypatch):
    """A name in two backend configs is one parameter: same type and default, else parameter_specs refuses."""
    by_name = {}
    for name, cls in NODE_BACKEND_CONFIGS.items():
        for f in dataclasses.fields(cls):
            by_name.setdefault(f.name, []).append((name, f.default))
    shared = {k: v for k, v in by_name.items() if len(v) > 1}
    assert "seed" in shared
    for k, v in shared.items():
        assert len({(type(d), d) for _, d in v}) == 1, (k, v)
        spec = next(s for s in P.parameter_specs() if s.name == k)
        assert spec.backends == tuple(n for n, _ in v) and all(f"{n}:" in spec.description for n, _ in v)

    @dataclasses.dataclass
    class Other:
        seed: float = 0.0  # a different type

    monkeypatch.setitem(NODE_BACKEND_CONFIGS, "other", Other)
    with pytest.raises(RuntimeError, match="seed"):
        P.parameter_specs()


def test_backend_built_from_its_own_parameters():
    """The chosen backend's config comes from its parameters only; device:=cpu is the CPU, default auto."""
    _, _, b = P.configs_from_values({"backend": "vggt", "device": "cpu", "image_width": 56, "max_num_features": 9})
    assert isinstance(b, VGGTBackendConfig) and b.device == "cpu" and b.image_width == 56
    assert P.configs_from_values({"backend": "vggt"}).backend.device == "auto"
    _, _, c = P.configs_from_values({"backend": "colmap", "max_num_features": 512, "device": "cuda"})
    assert isinstance(c, ColmapBackendConfig) and c.max_num_features == 512
    assert P.configs_from_values({"backend": "oracle"}).backend is None
    assert P.configs_from_values({"backend": "selfi_ros_testing:LineBackend"}).backend is None
    # bad values name the parameter
    with pytest.raises(ValueError, match="image_width"):
        P.configs_from_values({"backend": "vggt", "image_width": 50})
    with pytest.raises(ValueError, match="device"):
        P.configs_from_values({"backend": "vggt", "device": "gpu"})
    with pytest.raises(ValueError, match="pose_check"):
        P.configs_from_values({"backend": "vggt", "pose_check": "sometimes"})
    with pytest.raises(ValueError, match="ratio"):
        P.configs_from_values({"backend": "colmap", "ratio": 2.0})
    with pytest.raises(ValueError, match="max_num_features"):
        P.configs_from_values({"max_num_features": "many"})
    with pytest.raises(ValueError, match="online_clip_len"):
        P.configs_from_values({"backend": "vggt", "adapter": "a.safetensors", "online_adapter_training": True,
                               "online_clip_len": 8, "window_size": 6})
    be = P.make_backend_from_config(P.NodeConfig(backend="colmap"), c)
    assert be.config == c
    plug = P.make_backend_from_config(P.NodeConfig(backend="selfi_ros.engine.config:EngineConfig"))
    assert plug == EngineConfig()  # module:Class built without arguments (any class stands in here)


def test_yaml_matches_defaults():
    """If this fails after an EngineConfig change: python -m selfi_ros.ros.params > config/selfi.yaml"""
    with open(os.path.join(REPO, "config", "selfi.yaml")) as fh:
        y = yaml.safe_load(fh)
    params = y[P.NODE_NAME]["ros__parameters"]
    defaults = P.default_parameters()
    assert set(params) == set(defaults), f"missing: {set(defaults) - set(params)}, unknown: {set(params) - set(defaults)}"
    for k, v in params.items():
        assert v == defaults[k] and type(v) is type(defaults[k]), k
    assert P.render_yaml() == open(os.path.join(REPO, "config", "selfi.yaml")).read()


def test_configs_from_values_validation():
    node, eng, _ = P.configs_from_values({"voxel_size": 1, "window_size": 4, "image_topic": "/x"})
    assert eng.voxel_size == 1.0 and isinstance(eng.voxel_size, float) and eng.window_size == 4
    assert node.image_topic == "/x"
    with pytest.raises(ValueError, match="publish_tf"):
        P.configs_from_values({"publish_tf": "map_to_moon"})
    with pytest.raises(ValueError, match="image_transport"):
        P.configs_from_values({"image_transport": "theora"})
    with pytest.raises(ValueError, match="window_size"):
        P.configs_from_values({"window_size": "8"})
    for bad in ({"window_size": 1}, {"window_overlap": 6}, {"keyframe_buffer_size": 3}, {"voxel_size": 0.0},
                {"localize_batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            P.configs_from_values(bad)


def _launch_tree():
    with open(os.path.join(REPO, "launch", "selfi.launch.py")) as fh:
        return ast.parse(fh.read())


def test_launch_arguments_are_node_parameters():
    tree = _launch_tree()
    assigns = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)}
    arguments = ast.literal_eval(assigns["ARGUMENTS"])
    names = [a[0] for a in arguments]
    declared = P.default_parameters()
    with open(os.path.join(REPO, "config", "selfi.yaml")) as fh:
        yaml_params = yaml.safe_load(fh)[P.NODE_NAME]["ros__parameters"]
    for n in names:
        assert n in declared, f"launch argument {n} is not a selfi_node parameter"
        assert n in yaml_params, f"launch argument {n} is not in config/selfi.yaml"
    assert len(set(names)) == len(names)
    for required in ("image_topic", "camera_info_topic", "image_transport", "camera_frame", "map_frame",
                     "odom_frame", "base_frame", "backend", "checkpoint", "use_sim_time"):
        assert required in names
    assert ast.literal_eval(assigns["BOOL_ARGUMENTS"]) <= {n for n in names if isinstance(declared[n], bool)}
    # the Node action: package/executable/name the package installs, params file = config/selfi.yaml
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw["package"]) == "selfi_ros"
    assert ast.literal_eval(kw["executable"]) == "selfi_node"
    assert ast.literal_eval(kw["name"]) == P.NODE_NAME
    src = ast.unparse(tree)
    assert '"config", "selfi.yaml"' in src.replace("'", '"')
    declared_args = [ast.literal_eval(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
                     and getattr(c.func, "id", "") == "DeclareLaunchArgument" and c.args
                     and isinstance(c.args[0], ast.Constant)]
    assert declared_args == ["params_file"]  # the others are declared in the loop over ARGUMENTS


def test_declared_on_a_real_node():
    """The node declares exactly the specs (rclpy, no DDS traffic: a node in its own context)."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=231)
    try:
        node = rclpy.create_node("selfi_node", context=ctx, parameter_overrides=[
            Parameter("voxel_size", value=0.5), Parameter("window_size", value=5)])
        node_cfg, eng_cfg, backend_cfg = P.declare_parameters(node)
        assert isinstance(backend_cfg, ColmapBackendConfig)  # the default backend
        assert eng_cfg.voxel_size == 0.5 and eng_cfg.window_size == 5
        declared = set(node._parameters)
        assert set(P.default_parameters()) <= declared
        assert node.describe_parameter("voxel_size").description.startswith("voxel edge")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_package_files_agree():
    """setup.py, package.xml and CMakeLists.txt name the same package and install launch/config."""
    import xml.etree.ElementTree as ET

    root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
    assert root.find("name").text == "selfi_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    cm = open(os.path.join(REPO, "CMakeLists.txt")).read()
    assert "project(selfi_ros" in cm and "msg/SelfiStatus.msg" in cm and "lib/${PROJECT_NAME}" in cm
    setup = open(os.path.join(REPO, "setup.py")).read()
    assert "selfi_node = selfi_ros.ros.node:main" in setup and "selfi-ros = selfi_ros.cli:main" in setup
    assert os.path.isfile(os.path.join(REPO, "resource", "selfi_ros"))
    assert os.access(os.path.join(REPO, "scripts", "selfi_node"), os.X_OK)

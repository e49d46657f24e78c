"""pip install of selfi_ros (ament_python layout) for a venv with the ROS 2 PyPI wheels.

On a robot with ROS 2, `colcon build` uses CMakeLists.txt (build_type ament_cmake in package.xml), which also
generates the msg/ interfaces; in a venv run scripts/build_interfaces.sh first, then `pip install .`
(non-editable: an editable install would not install the data_files the ament index needs).
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "selfi_ros"


def _version() -> str:
    for line in open(f"{PACKAGE}/__init__.py"):
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("no __version__ in selfi_ros/__init__.py")


setup(
    name=PACKAGE,
    version=_version(),
    description="ROS 2 node: camera stream -> poses on /tf and PointCloud2 maps with a learned multi-view model",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    include_package_data=False,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.rviz"))),
        (f"share/{PACKAGE}/msg", sorted(glob("msg/*.msg"))),
        (f"share/{PACKAGE}/srv", sorted(glob("srv/*.srv"))),
        (f"share/{PACKAGE}/data/sample", sorted(glob("data/sample/*"))),
    ],
    install_requires=["numpy", "scipy", "pyyaml"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "selfi_node = selfi_ros.ros.node:main",
            "selfi-ros = selfi_ros.cli:main",
        ],
    },
)

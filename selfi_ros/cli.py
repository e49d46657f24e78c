"""`selfi-ros` command line: one entry point, sub-commands implemented by the modules that own them.

Each sub-command module exposes ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``; modules are imported only when their command runs, so that
``selfi-ros reconstruct`` needs no ROS and ``selfi-ros play`` needs no torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("selfi_ros.apps.demo", "run the node on the bundled sample bag, record its outputs, report ATE and latency"),
    "play": ("selfi_ros.ros.player", "publish an MCAP bag's messages through rclpy at the recorded rate"),
    "record": ("selfi_ros.ros.recorder", "record /tf and PointCloud2 topics to a trajectory and a PLY map"),
    "reconstruct": ("selfi_ros.apps.reconstruct", "run the engine offline on an image folder or a bag"),
    "eval": ("selfi_ros.apps.evaluate", "ATE/RPE of a TUM trajectory against ground truth (evo)"),
    "train-adapter": ("selfi_ros.apps.train_adapter", "train the Selfi feature adapter self-supervised"),
    "make-sample": ("selfi_ros.apps.make_sample", "re-create the bundled sample bag from its source"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the sub-command named by ``only`` (if any) imports its module."""
    parser = argparse.ArgumentParser(prog="selfi-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

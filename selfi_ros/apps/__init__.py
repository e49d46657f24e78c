"""The ``selfi-ros`` commands (:mod:`selfi_ros.cli` dispatches to them), each with its own I/O.

Every module exposes ``add_arguments(parser)`` and ``run(args) -> int``: :mod:`.demo` (the main job on the
bundled sample), :mod:`.reconstruct` (the engine offline on images or a bag), :mod:`.evaluate` (ATE / RPE with
evo), :mod:`.train_adapter` (Selfi adapter training), :mod:`.make_sample` (re-render the sample).
"""

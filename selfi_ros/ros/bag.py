"""Write and read ROS 2 bags in MCAP storage (the rosbag2 default) without rosbag2.

Messages are serialised to CDR with ``rclpy.serialization`` (the same bytes a ROS 2 publisher sends),
and stored with the ``mcap`` library under the ``ros2`` profile: one schema per message type (encoding
``ros2msg``, data = the ``.msg`` definition followed by its dependencies in the rosbag2 layout), one
channel per topic (message encoding ``cdr``). Bags written here are read by ``ros2 bag play`` (MCAP
plugin), Foxglove, ``rosbags`` and :func:`read_messages`.

Usage::

    with BagWriter("sample.mcap") as bag:
        bag.write("/camera/image_raw", image_msg, log_time_ns=stamp_ns)
    for m in read_messages("sample.mcap", topics=["/camera/image_raw"]):
        m.topic, m.log_time_ns, m.message   # message: a deserialised rclpy message object

Only ``rclpy`` and the message packages are needed (no running ROS graph, no ``rclpy.init``).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

#: primitive ROS 2 field types (no definition to embed)
_PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring",
}
_SEPARATOR = "=" * 80


def type_name_of(msg_or_cls: Any) -> str:
    """ROS 2 type name ``pkg/msg/Type`` of an rclpy message instance or class.

    Raises:
        TypeError: if the object is not a generated ROS 2 message (module ``pkg.msg._x``).
    """
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    parts = cls.__module__.split(".")
    if len(parts) < 2 or parts[1] not in ("msg", "srv", "action"):
        raise TypeError(f"not a ROS 2 message type: {cls!r} (module {cls.__module__})")
    return f"{parts[0]}/{parts[1]}/{cls.__name__}"


def message_class(type_name: str) -> type:
    """Import the rclpy message class for ``pkg/msg/Type`` (or ``pkg/Type``).

    Raises:
        ImportError / AttributeError: if the package or type is not installed.
    """
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"bad ROS 2 type name {type_name!r}, expected 'pkg/msg/Type'")
    return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])


def _share_dirs() -> list[str]:
    dirs = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(os.path.join(prefix, "share"))
    dirs.append(os.path.join(sys.prefix, "share"))
    return dirs


def _find_msg_file(pkg: str, name: str) -> str:
    for share in _share_dirs():
        p = os.path.join(share, pkg, "msg", name + ".msg")
        if os.path.isfile(p):
            return p
    # fall back to the location of the generated Python package (<prefix>/lib/pythonX/site-packages/pkg)
    try:
        mod = importlib.import_module(pkg)
        root = os.path.dirname(mod.__file__)
        prefix = root
        for _ in range(6):
            prefix = os.path.dirname(prefix)
            p = os.path.join(prefix, "share", pkg, "msg", name + ".msg")
            if os.path.isfile(p):
                return p
    except Exception:  # noqa: BLE001 - best effort lookup
        pass
    raise FileNotFoundError(f"definition of {pkg}/msg/{name} not found in {_share_dirs()}")


def _field_types(text: str, pkg: str) -> list[tuple[str, str]]:
    """(package, Type) of every non-primitive field in a .msg text."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2:
            continue
        ftype = tokens[0]  # constants are always primitive, so they are skipped below
        base = re.sub(r"\[.*\]$", "", ftype)
        base = re.sub(r"<=\d+$", "", base)
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            out.append(("std_msgs", "Header"))
        elif "/" in base:
            p = base.split("/")
            out.append((p[0], p[-1]))
        else:
            out.append((pkg, base))
    return out


def message_definition(type_name: str) -> str:
    """Full ``ros2msg`` schema text of ``pkg/msg/Type``: its .msg, then each dependency (depth-first,
    each once) after a line of 80 ``=`` and ``MSG: pkg/msg/Dep`` (the layout rosbag2 writes).

    Raises:
        FileNotFoundError: when a ``.msg`` file cannot be found under the ament prefixes.
    """
    parts = type_name.split("/")
    pkg, name = parts[0], parts[-1]
    main = open(_find_msg_file(pkg, name)).read()
    seen: set[tuple[str, str]] = set()
    blocks: list[str] = []

    def visit(text: str, p: str) -> None:
        for dep in _field_types(text, p):
            if dep in seen:
                continue
            seen.add(dep)
            dtext = open(_find_msg_file(*dep)).read()
            blocks.append(f"{_SEPARATOR}\nMSG: {dep[0]}/msg/{dep[1]}\n{dtext.rstrip()}\n")
            visit(dtext, dep[0])

    visit(main, pkg)
    return main.rstrip() + "\n" + "".join(blocks)


class BagWriter:
    """Write rclpy messages to an MCAP ROS 2 bag (rosbag2-compatible).

    Args:
        path: output ``.mcap`` file (a parent folder is created if needed). Written to ``path + '.tmp'``
            and renamed on :meth:`close`, so a crash never leaves a truncated bag at ``path``.
        compression: ``"zstd"`` (default), ``"lz4"`` or ``"none"``.
    """

    def __init__(self, path: str, compression: str = "zstd") -> None:
        from mcap.writer import CompressionType, Writer

        self.path = str(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._tmp = self.path + ".tmp"
        self._fh = open(self._tmp, "wb")
        comp = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}[compression]
        self._writer = Writer(self._fh, compression=comp)
        self._writer.start(profile="ros2", library="selfi_ros.ros.bag")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._seq: dict[str, int] = {}
        self.count = 0
        self._closed = False

    def _channel(self, topic: str, type_name: str, qos_yaml: str) -> int:
        if topic in self._channels:
            cid, tname = self._channels[topic]
            if tname != type_name:
                raise ValueError(f"topic {topic} already has type {tname}, got {type_name}")
            return cid
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
            )
        meta = {"offered_qos_profiles": qos_yaml} if qos_yaml else {}
        cid = self._writer.register_channel(
            topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name], metadata=meta
        )
        self._channels[topic] = (cid, type_name)
        return cid

    def write(self, topic: str, msg: Any, log_time_ns: Optional[int] = None, publish_time_ns: Optional[int] = None,
              qos_yaml: str = "") -> None:
        """Serialise ``msg`` (an rclpy message) to CDR and append it on ``topic`` at ``log_time_ns``
        (integer ns; rosbag2 uses the receive time, players replay in this order/rate). Without
        ``log_time_ns`` the message's ``header.stamp`` is used.

        Raises:
            ValueError: no ``log_time_ns`` and the message has no header.
        """
        from rclpy.serialization import serialize_message

        if self._closed:
            raise RuntimeError("BagWriter is closed")
        if log_time_ns is None:
            header = getattr(msg, "header", None)
            if header is None:
                raise ValueError(f"{type(msg).__name__} on {topic} has no header: give log_time_ns")
            log_time_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        cid = self._channel(topic, type_name_of(msg), qos_yaml)
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        self._writer.add_message(
            channel_id=cid, log_time=int(log_time_ns),
            publish_time=int(publish_time_ns if publish_time_ns is not None else log_time_ns),
            data=serialize_message(msg), sequence=seq,
        )
        self.count += 1

    def close(self) -> None:
        """Finish the MCAP summary and move the file into place (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._writer.finish()
        self._fh.close()
        os.replace(self._tmp, self.path)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # do not publish a partial bag under the final name
            self._closed = True
            try:
                self._fh.close()
            finally:
                if os.path.exists(self._tmp):
                    os.remove(self._tmp)


@dataclass
class BagMessage:
    """One message read from a bag.

    Attributes:
        topic: topic name.
        type_name: ``pkg/msg/Type``.
        log_time_ns: record time (ns) - replay clock.
        publish_time_ns: publish time (ns).
        data: raw CDR bytes.
        message: the deserialised rclpy message, or None when ``deserialize=False``.
    """

    topic: str
    type_name: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes
    message: Any = None


def bag_topics(path: str) -> dict[str, str]:
    """Map topic -> type name of every channel in an MCAP bag (from its summary)."""
    from mcap.reader import make_reader

    with open(path, "rb") as fh:
        summary = make_reader(fh).get_summary()
    if summary is None:
        return {}
    return {ch.topic: summary.schemas[ch.schema_id].name for ch in summary.channels.values()}


def read_messages(path: str, topics: Optional[Sequence[str]] = None, deserialize: bool = True,
                  start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> Iterator[BagMessage]:
    """Iterate over the messages of an MCAP ROS 2 bag in log-time order.

    Args:
        path: ``.mcap`` file (or a rosbag2 folder holding exactly one ``.mcap``).
        topics: only these topics (None: all).
        deserialize: decode with ``rclpy.serialization.deserialize_message`` into rclpy message objects
            (needs the message packages installed); else only raw CDR bytes are returned.
        start_ns, end_ns: optional log-time bounds (inclusive start, exclusive end).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a message encoding other than ``cdr``.
    """
    from mcap.reader import make_reader

    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".mcap"))
        if len(files) != 1:
            raise FileNotFoundError(f"{path}: expected one .mcap file, found {files}")
        path = os.path.join(path, files[0])
    if deserialize:
        from rclpy.serialization import deserialize_message
    classes: dict[str, type] = {}
    with open(path, "rb") as fh:
        reader = make_reader(fh)
        for schema, channel, message in reader.iter_messages(
            topics=list(topics) if topics else None, start_time=start_ns, end_time=end_ns, log_time_order=True
        ):
            if channel.message_encoding != "cdr":
                raise ValueError(f"{channel.topic}: unsupported message encoding {channel.message_encoding!r}")
            tname = schema.name if schema is not None else ""
            obj = None
            if deserialize:
                if tname not in classes:
                    classes[tname] = message_class(tname)
                obj = deserialize_message(message.data, classes[tname])
            yield BagMessage(channel.topic, tname, int(message.log_time), int(message.publish_time),
                             bytes(message.data), obj)


def write_messages(path: str, messages: Iterable[tuple[str, Any, int]]) -> int:
    """Convenience: write ``(topic, msg, log_time_ns)`` tuples to ``path``; returns the count."""
    with BagWriter(path) as bag:
        for topic, msg, t in messages:
            bag.write(topic, msg, t)
        return bag.count

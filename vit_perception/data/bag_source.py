"""Message streams out of rosbag2 (mcap, sqlite3) and ROS 1 bags, tolerant of truncated files.

`iter_messages(bag, topics)` yields deserialised messages in bag order through rosbags'
`AnyReader`. When a bag cannot be opened or read to its end (a recorder that crashed, a copy cut
short), the readable part is still yielded, read record by record straight from the storage file,
and `BagError` is raised afterwards naming the file and the last good message.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_WARNED: set[Path] = set()


class BagError(RuntimeError):
    """A bag that cannot be read to its end; raised after its readable part was processed."""


class TopicError(ValueError):
    """A topic the bag does not have, or one of another message type than asked for."""


@dataclass(frozen=True)
class BagMessage:
    """One deserialised message: `log_ns` is the bag's receive time, `msg` a rosbags object."""

    topic: str
    msgtype: str
    log_ns: int
    msg: object


def header_stamp_ns(msg) -> int:
    """`header.stamp` of a message in nanoseconds (ROS 1 `secs`/`nsecs` too)."""
    stamp = msg.header.stamp
    sec = getattr(stamp, "sec", None)
    if sec is None:
        return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)
    return int(sec) * 1_000_000_000 + int(stamp.nanosec)


class _Tracker:
    """Remembers the last message read, for the error message."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.last: tuple[str, int] | None = None

    def seen(self, topic: str, msg, log_ns: int) -> None:
        self.count += 1
        try:
            stamp = header_stamp_ns(msg)
        except AttributeError:
            stamp = log_ns
        self.last = (topic, stamp)

    def error(self, reason: str) -> BagError:
        if self.last is None:
            where = "no message could be read"
        else:
            topic, stamp = self.last
            where = (f"last good message: topic {topic} stamp {stamp // 1_000_000_000}."
                     f"{stamp % 1_000_000_000:09d} ({stamp} ns), after {self.count} messages")
        return BagError(f"{self.path}: truncated or corrupt bag ({reason}); {where}")


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.mcap")) + sorted(path.glob("*.db3"))
    return files


BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def check_bag(bag: str | Path) -> Path:
    """``bag`` as a ``Path`` when it can be a bag; ``BagError`` saying what it is otherwise.

    A bag is a rosbag2 folder (``metadata.yaml`` and/or ``.mcap``/``.db3`` storage files), a
    bare ``.mcap``/``.db3`` file or a ROS 1 ``.bag``. Whether its contents are readable is
    found out when it is read.
    """
    path = Path(bag)
    if not path.exists():
        raise BagError(f"{path}: no such bag (the path does not exist)")
    if path.is_file():
        if path.suffix not in BAG_SUFFIXES:
            raise BagError(f"{path}: not a bag (expected a rosbag2 folder, or a "
                           f"{', '.join(BAG_SUFFIXES)} file)")
        if path.stat().st_size == 0:
            raise BagError(f"{path}: the bag file is empty (0 bytes)")
        return path
    if not _storage_files(path):
        if (path / "metadata.yaml").is_file():
            raise BagError(f"{path}: not a readable bag: it has a metadata.yaml but no .mcap or "
                           ".db3 storage file (the recording's data is missing)")
        raise BagError(f"{path}: not a bag: a folder without metadata.yaml or .mcap/.db3 "
                       "storage files")
    return path


def check_topic(bag: str | Path, topic: str, kind: str = "image") -> None:
    """``TopicError`` naming ``bag`` unless it has ``topic`` of the ``kind`` (``image``: Image or
    CompressedImage, ``labels``: Detection2DArray). Reading frames checks this, and a training
    command also before it claims its run folder, so a typo costs nothing."""
    from vit_perception.data.msg_defs import COMPRESSED_IMAGE, DETECTION2D_ARRAY, IMAGE

    types = {"image": (IMAGE, COMPRESSED_IMAGE), "labels": (DETECTION2D_ARRAY,)}[kind]
    topics = bag_topics(bag)
    if topic not in topics:
        raise TopicError(f"{bag}: no topic {topic} (--{kind}-topic); topics: "
                         f"{sorted(topics)}")
    if topics[topic] not in types:
        raise TopicError(f"{bag}: {topic} is {topics[topic]}, not "
                         f"{'an' if kind == 'image' else 'a'} {kind} topic (--{kind}-topic)")


def bag_topics(bag: str | Path) -> dict[str, str]:
    """{topic: message type} of a bag (ROS 2 type names, e.g. sensor_msgs/msg/Image).

    Raises ``BagError`` when ``bag`` is not a bag at all (``check_bag``).
    """
    path = check_bag(bag)
    try:
        reader = _any_reader(path)
        with reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception:  # noqa: BLE001 - fall back to the storage files themselves
        topics: dict[str, str] = {}
        for f in _storage_files(path):
            src = _McapSalvage(f) if f.suffix == ".mcap" else _SqliteSalvage(f)
            try:
                topics.update(src.topics())
            except Exception:  # noqa: BLE001 - unreadable: nothing to list
                pass
        return topics


def _any_reader(path: Path):
    from rosbags.highlevel import AnyReader

    from vit_perception.data.msg_defs import typestore

    if path.is_file() and path.suffix in (".mcap", ".db3"):
        raise FileNotFoundError(f"{path} is a bare storage file (no metadata.yaml)")
    return AnyReader([path], default_typestore=typestore())


def _close(reader) -> None:
    """Close an AnyReader; a generator left unfinished is closed when the interpreter shuts
    down, where rosbags' close (it imports its type store) raises ImportError: nothing is left
    to release then, and the error would print as "Exception ignored in ... iter_messages"."""
    try:
        reader.close()
    except ImportError:
        pass


def iter_messages(bag: str | Path, topics: Collection[str] | None = None) -> Iterator[BagMessage]:
    """Deserialised messages on `topics` (all if None) of one bag, in bag order.

    `bag` is a rosbag2 directory, a bare `.mcap`/`.db3` file, or a ROS 1 `.bag`. Raises
    `BagError` for a path that is not a bag (`check_bag`) and (after yielding every readable
    message) for a truncated or corrupt one.
    """
    path = check_bag(bag)
    tracker = _Tracker(path)
    reader = None
    try:
        reader = _any_reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - any open failure: read what the files hold
        reader = None
        open_error = exc
    if reader is not None:
        try:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:
                return
            for conn, log_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                yield BagMessage(conn.topic, conn.msgtype, log_ns, msg)
                tracker.seen(conn.topic, msg, log_ns)
        except Exception as exc:  # noqa: BLE001 - reported with the file and last message
            raise tracker.error(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _close(reader)
        return
    if path.suffix == ".bag":
        raise tracker.error(f"{type(open_error).__name__}: {open_error}") from open_error
    files = _storage_files(path)
    if not files:
        raise tracker.error(f"no storage file: {open_error}") from open_error
    if not (path.is_file() and "bare storage file" in str(open_error)) and path not in _WARNED:
        _WARNED.add(path)
        log.warning("%s: %s; reading the storage files record by record", path, open_error)
    errors = []
    for f in files:
        src = _McapSalvage(f) if f.suffix == ".mcap" else _SqliteSalvage(f)
        for item in src.messages(topics):
            yield item
            tracker.seen(item.topic, item.msg, item.log_ns)
        if src.error:
            errors.append(f"{f.name}: {src.error}")
    if errors or not (path.is_file() and "bare storage file" in str(open_error)):
        reason = "; ".join(errors) or f"{type(open_error).__name__}: {open_error}"
        raise tracker.error(reason)


def _store_from_defs(defs: dict[str, tuple[str, str]]):
    """A type store from {msgtype: (encoding, text)} embedded definitions, else the default."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    from vit_perception.data.msg_defs import register, typestore

    if not defs:
        return typestore()
    typs: dict = {}
    try:
        for name, (encoding, text) in defs.items():
            if not text:
                continue
            if encoding in ("ros2msg", "msg"):
                typs.update(get_types_from_msg(text, name))
            elif encoding in ("ros2idl", "idl"):
                typs.update(get_types_from_idl(text))
        store = get_typestore(Stores.EMPTY)
        store.register(typs)
        register(store)
        return store
    except Exception:  # noqa: BLE001 - bad embedded definitions: use the standard ones
        return typestore()


class _McapSalvage:
    """Reads an MCAP file record by record from its start, stopping where it is cut."""

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None

    def topics(self) -> dict[str, str]:
        schemas: dict[int, str] = {}
        out: dict[str, str] = {}
        for op, content in self._records():
            if op == 0x03:
                sid, name, _, _ = _mcap_schema(content)
                schemas[sid] = name
            elif op == 0x04:
                _, schema_id, topic = _mcap_channel(content)
                out[topic] = schemas.get(schema_id, "")
        return out

    def _records(self) -> Iterator[tuple[int, bytes]]:
        with self.path.open("rb") as f:
            if f.read(8) != _MCAP_MAGIC:
                self.error = "not an MCAP file (bad magic)"
                return
            while True:
                head = f.read(9)
                if len(head) < 9:
                    self.error = "file ends without its footer"
                    return
                op, size = head[0], struct.unpack("<Q", head[1:])[0]
                if op == 0x02:  # footer: complete file
                    self.error = None
                    return
                if op == 0x0F:  # data end: the rest is the summary
                    self.error = None
                    return
                content = f.read(size)
                if len(content) < size:
                    if op == 0x06:
                        yield from self._chunk(content, partial=True)
                    self.error = "file ends inside a record"
                    return
                if op == 0x06:
                    yield from self._chunk(content, partial=False)
                    if self.error:
                        return
                else:
                    yield op, content

    def _chunk(self, content: bytes, partial: bool) -> Iterator[tuple[int, bytes]]:
        try:
            bio = io.BytesIO(content)
            bio.seek(28)
            (n,) = struct.unpack("<I", bio.read(4))
            compression = bio.read(n).decode()
            (size,) = struct.unpack("<Q", bio.read(8))
            data = bio.read(size)
        except struct.error:
            return
        if compression:
            if partial or len(data) < size:
                return
            data = _decompress(compression, data)
        yield from _split_records(data)

    def messages(self, topics) -> Iterator[BagMessage]:
        schemas: dict[int, tuple[str, str, str]] = {}
        channels: dict[int, tuple[str, str]] = {}
        store = None
        for op, content in self._records():
            if op == 0x03:
                sid, name, encoding, text = _mcap_schema(content)
                schemas[sid] = (name, encoding, text)
                store = None
            elif op == 0x04:
                cid, schema_id, topic = _mcap_channel(content)
                channels[cid] = (topic, schemas.get(schema_id, ("", "", ""))[0])
            elif op == 0x05:
                cid, _, log_ns, _ = struct.unpack_from("<HIQQ", content)
                if cid not in channels:
                    continue
                topic, msgtype = channels[cid]
                if topics is not None and topic not in topics:
                    continue
                if store is None:
                    store = _store_from_defs({n: (e, t) for n, e, t in schemas.values()})
                try:
                    msg = store.deserialize_cdr(content[22:], msgtype)
                except Exception as exc:  # noqa: BLE001 - a damaged message ends the salvage
                    self.error = f"undecodable {msgtype} message: {exc}"
                    return
                yield BagMessage(topic, msgtype, log_ns, msg)


def _decompress(compression: str, data: bytes) -> bytes:
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported MCAP chunk compression {compression!r}")


def _split_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 9 <= len(data):
        op, size = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        if pos + 9 + size > len(data):
            return
        yield op, data[pos + 9:pos + 9 + size]
        pos += 9 + size


def _mcap_str(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4:pos + 4 + n]).decode(), pos + 4 + n


def _mcap_schema(content: bytes) -> tuple[int, str, str, str]:
    (sid,) = struct.unpack_from("<H", content, 0)
    name, pos = _mcap_str(content, 2)
    encoding, pos = _mcap_str(content, pos)
    text, _ = _mcap_str(content, pos)
    return sid, name, encoding, text


def _mcap_channel(content: bytes) -> tuple[int, int, str]:
    cid, schema_id = struct.unpack_from("<HH", content, 0)
    topic, _ = _mcap_str(content, 4)
    return cid, schema_id, topic


def _sqlite_connect(path: Path):
    """A read-only apsw connection to a possibly truncated sqlite file.

    The header's page count is replaced by the count the file really holds, so sqlite reads the
    schema and every intact page instead of calling the whole file malformed.
    """
    import apsw

    size = path.stat().st_size

    class _File(apsw.VFSFile):
        def __init__(self, _vfs, _name, _flags):
            self._f = path.open("rb")

        def xDeviceCharacteristics(self) -> int:
            return 0

        def xSectorSize(self) -> int:
            return 0

        def xFileControl(self, op: int, ptr: int) -> bool:
            return False

        def xFileSize(self) -> int:
            return size

        def xRead(self, amount: int, offset: int) -> bytes:
            self._f.seek(offset)
            data = self._f.read(amount)
            if offset <= 28 and offset + len(data) >= 32 and len(data) >= 18 - offset:
                page = struct.unpack_from(">H", data, 16 - offset)[0] if offset <= 16 else 0
                page = 65536 if page == 1 else page
                if page:
                    buf = bytearray(data)
                    buf[28 - offset:32 - offset] = struct.pack(">I", size // page)
                    data = bytes(buf)
            return data

        def xLock(self, level: int) -> None:
            pass

        def xUnlock(self, level: int) -> None:
            pass

        def xCheckReservedLock(self) -> bool:
            return False

        def xClose(self) -> None:
            self._f.close()

    class _Vfs(apsw.VFS):
        def __init__(self, name: str):
            super().__init__(name, "")

        def xOpen(self, name, flags):
            if name is None:
                return super().xOpen(name, flags)
            return _File(self, name, flags)

    name = f"vitp-salvage-{id(path)}-{size}"
    vfs = _Vfs(name)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY, vfs=name)
    return _Conn(conn, vfs)


class _Conn:
    """An apsw connection that owns its VFS (unregistered on close)."""

    def __init__(self, conn, vfs):
        self._conn, self._vfs = conn, vfs

    def execute(self, sql: str):
        return self._conn.execute(sql)

    def close(self) -> None:
        self._conn.close()
        self._vfs.unregister()


class _SqliteSalvage:
    """Reads a rosbag2 sqlite3 file row by row, stopping at the first unreadable page."""

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None

    def topics(self) -> dict[str, str]:
        conn = _sqlite_connect(self.path)
        try:
            return {name: typ for name, typ in conn.execute("SELECT name, type FROM topics")}
        finally:
            conn.close()

    def messages(self, topics) -> Iterator[BagMessage]:
        import apsw

        try:
            conn = _sqlite_connect(self.path)
            rows = list(conn.execute("SELECT id, name, type FROM topics"))
        except (apsw.Error, OSError) as exc:
            self.error = f"sqlite: {exc}"
            return
        try:
            defs: dict[str, tuple[str, str]] = {}
            try:
                for typ, enc, text in conn.execute(
                    "SELECT topic_type, encoding, encoded_message_definition "
                    "FROM message_definitions"
                ):
                    defs[typ] = (enc, text)
            except apsw.Error:
                pass
            store = _store_from_defs(defs)
            by_id = {i: (name, typ) for i, name, typ in rows
                     if topics is None or name in topics}
            try:
                cur = conn.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
                for topic_id, log_ns, data in cur:
                    if topic_id not in by_id:
                        continue
                    topic, msgtype = by_id[topic_id]
                    try:
                        msg = store.deserialize_cdr(data, msgtype)
                    except Exception as exc:  # noqa: BLE001 - damaged row ends the salvage
                        self.error = f"undecodable {msgtype} message: {exc}"
                        return
                    yield BagMessage(topic, msgtype, int(log_ns), msg)
            except apsw.Error as exc:
                self.error = f"sqlite: {exc}"
        finally:
            conn.close()

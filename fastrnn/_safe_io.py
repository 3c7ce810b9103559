"""Bounded reading of files someone else wrote: zip members, ``.npy`` arrays, JSON.

fastrnn's loaders (``fastrnn.load``, ``fastrnn.streaming.load_stream``,
``fastrnn.load_keras``) read through these helpers, so that what a file
*declares* is checked against what it *holds* before anything is allocated,
and every refusal is a ``ValueError`` naming the file and the problem:

* a zip member may inflate to at most ``INFLATE_RATIO`` times the size of the
  whole archive on disk plus ``INFLATE_FLOOR`` (a stored member, as fastrnn,
  NumPy and Keras write them, always fits; a decompression bomb does not);
* an ``.npy`` array's shape and dtype must account exactly for the bytes of
  its member, and the array is read only when a loader asks for it;
* JSON is at most ``JSON_LIMIT`` bytes and nested at most ``JSON_DEPTH``
  levels (a model's config is a dozen levels deep), so that nothing that
  walks it recursively can exhaust the stack;
* a loader builds layers from a config without their shape arguments
  (:func:`defer_build`), so no random weights are made: the file's arrays
  build the layer, and the sizes the config declared are then checked
  against them (:func:`check_features`).

This module imports nothing from fastrnn (it is on the ground floor).
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np

INFLATE_RATIO = 4
INFLATE_FLOOR = 1 << 20
JSON_LIMIT = 64 << 20
JSON_DEPTH = 100
_NPY_HEADER_LIMIT = 1 << 16
_CHUNK = 1 << 20
# The Keras recurrent layers whose shape arguments build random weights.
_RECURRENT = ("RNN", "SimpleRNN", "GRU", "LSTM")
_SHAPE_KEYS = ("input_dim", "input_shape", "batch_input_shape")


def source(path, where):
    """``path`` as a loader opens it: a bytes path decoded (``os.fsdecode``),
    anything else as it came; a file object opened in text mode is a
    ``TypeError`` (its reads give ``str``: the load would fail later with a
    decoding error that names nothing)."""
    if isinstance(path, bytes):
        return os.fsdecode(path)
    if isinstance(path, io.TextIOBase):
        raise TypeError(f"{where}: expected a path or a binary file object, got a text-mode "
                        f"file {getattr(path, 'name', path)!r} (open it with 'rb')")
    return path


def size_of(source):
    """Bytes in ``source``: a path, or a seekable binary file object (from its start)."""
    if hasattr(source, "read"):
        here = source.tell()
        try:
            return source.seek(0, os.SEEK_END)
        finally:
            source.seek(here)
    return os.path.getsize(os.fspath(source))


def inflate_limit(archive_size):
    """The most bytes a member of an archive of ``archive_size`` bytes may inflate to."""
    return INFLATE_RATIO * int(archive_size) + INFLATE_FLOOR


class ReadBudget:
    """The bytes a loader may still read from a file: :func:`inflate_limit` of its size.

    A format whose arrays may be stored compressed or not at all (an HDF5
    dataset without storage reads as its fill value) is read against this
    budget, so a file never makes a loader allocate more than a few times
    its own size.
    """

    def __init__(self, file_size, where):
        self.file_size, self.left, self.where = int(file_size), inflate_limit(file_size), where

    def take(self, nbytes, what):
        """Account for reading ``nbytes`` for ``what``; ``ValueError`` past the budget."""
        if nbytes > self.left:
            raise ValueError(
                f"{self.where}: {what} declares {_human(nbytes)}, more than a file of "
                f"{_human(self.file_size)} can hold (its arrays may take "
                f"{_human(inflate_limit(self.file_size))} in all, {_human(self.left)} of it "
                "left)")
        self.left -= nbytes


def _human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def member_info(zf, name, limit, where):
    """``zf.getinfo(name)`` after checking that its declared size fits ``limit``.

    Raises
    ------
    ValueError
        The member is missing, encrypted, or declares more than ``limit``
        bytes uncompressed.
    """
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{where}: no member {name!r} (found {zf.namelist()[:20]})") from None
    if info.flag_bits & 0x1:
        raise ValueError(f"{where}: member {name!r} is encrypted")
    if info.file_size > limit:
        raise ValueError(
            f"{where}: member {name!r} declares {info.file_size} bytes "
            f"({_human(info.file_size)}) uncompressed, more than the {_human(limit)} a file "
            f"of this size may inflate to (a decompression bomb, or not a file this loader "
            "wrote)")
    return info


def read_member(zf, name, limit, where):
    """The bytes of member ``name``, refused before reading if it declares more than ``limit``.

    ``zipfile`` returns at most the declared size, so the check bounds the read.
    """
    member_info(zf, name, limit, where)
    return zf.read(name)


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of a seekable binary file, as a seekable file.

    Every read seeks first, so the underlying file may be shared (a ``ZipFile``
    reads the same file object).
    """

    def __init__(self, fp, start, size):
        super().__init__()
        self._fp, self._start, self._size, self._pos = fp, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=os.SEEK_SET):
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer):
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._fp.seek(self._start + self._pos)
        got = self._fp.readinto(memoryview(buffer)[:n])
        self._pos += got or 0
        return got


def open_member(zf, name, limit, archive_size, where, check_crc=True):
    """A seekable file object over member ``name`` of ``zf``, read lazily where possible.

    A stored member is a window on the archive (nothing is read into memory;
    with ``check_crc`` its CRC-32 is checked by streaming through it once);
    a compressed one is inflated into memory, after the declared size was
    checked against ``limit``.
    """
    info = member_info(zf, name, limit, where)
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(zf.read(name))
    if info.compress_size != info.file_size:
        raise ValueError(f"{where}: member {name!r} is stored with {info.compress_size} bytes "
                         f"but declares {info.file_size}")
    fp = zf.fp
    fp.seek(info.header_offset)
    header = fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ValueError(f"{where}: member {name!r} has no valid local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > archive_size:
        raise ValueError(f"{where}: member {name!r} runs past the end of the file "
                         "(truncated)")
    window = _Window(fp, start, info.file_size)
    if check_crc:
        crc = 0
        while chunk := window.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
        if crc != info.CRC:
            raise ValueError(f"{where}: member {name!r} fails its CRC-32 check (the file is "
                             "corrupted)")
        window.seek(0)
    return window


def load_json(data, where, what):
    """Parse JSON ``data`` (bytes or str) and check its nesting depth.

    Raises
    ------
    ValueError
        Not a string, not UTF-8, not JSON, larger than ``JSON_LIMIT``, or
        nested deeper than ``JSON_DEPTH``.
    """
    if not isinstance(data, (bytes, bytearray, str)):
        text = repr(data)
        raise ValueError(f"{where}: {what}: expected a JSON string (str or bytes), got "
                         f"{type(data).__name__} {text[:60] + '...' if len(text) > 60 else text}")
    if len(data) > JSON_LIMIT:
        raise ValueError(f"{where}: {what} is {_human(len(data))}, more than the "
                         f"{_human(JSON_LIMIT)} a config may take")
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: {what} is nested too deeply to be a model's config "
                         f"(more than {JSON_DEPTH} levels)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where}: {what} is not valid JSON: {exc}") from exc
    check_depth(value, where, what)
    return value


def check_depth(value, where, what):
    """Refuse a parsed JSON value with more than ``JSON_DEPTH`` levels of
    objects and arrays (``[]`` is one, ``[[1]]`` two; iteratively)."""
    level, depth = [value], 0
    while True:
        level = [item for item in level if isinstance(item, (dict, list))]
        if not level:
            return
        depth += 1
        if depth > JSON_DEPTH:
            break
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)]
    raise ValueError(f"{where}: {what} is nested more than {JSON_DEPTH} levels deep; a "
                     "model's config is not")


# ----------------------------------------------------------------- .npy / .npz


def _npy_header(fp, where):
    """``(shape, fortran_order, dtype, data offset)`` of the ``.npy`` at ``fp``'s start."""
    from numpy.lib import format as npy_format

    head = fp.read(8)
    if len(head) != 8 or head[:6] != b"\x93NUMPY":
        raise ValueError(f"{where}: not a .npy array")
    version = (head[6], head[7])
    if version == (1, 0):
        size_bytes, read_header = 2, npy_format.read_array_header_1_0
    elif version == (2, 0):
        size_bytes, read_header = 4, npy_format.read_array_header_2_0
    else:
        raise ValueError(f"{where}: unsupported .npy format version {version}")
    raw_len = fp.read(size_bytes)
    if len(raw_len) != size_bytes:
        raise ValueError(f"{where}: truncated .npy header")
    length = int.from_bytes(raw_len, "little")
    if length > _NPY_HEADER_LIMIT:
        raise ValueError(f"{where}: .npy header of {length} bytes is implausibly large")
    text = fp.read(length)
    if len(text) != length:
        raise ValueError(f"{where}: truncated .npy header")
    try:
        shape, fortran, dtype = read_header(io.BytesIO(raw_len + text),
                                            max_header_size=_NPY_HEADER_LIMIT)
    except Exception as exc:  # noqa: BLE001 - whatever the header provokes is a bad file
        raise ValueError(f"{where}: invalid .npy header: {exc}") from exc
    if any(d < 0 for d in shape):
        raise ValueError(f"{where}: .npy header declares a negative shape {shape}")
    return shape, fortran, dtype, 8 + size_bytes + length


# What reading a damaged or crafted archive member can raise: zipfile's own
# errors, a truncated or bad deflate stream, an unsupported compression method
# (NotImplementedError), an encrypted member (RuntimeError).
_UNREADABLE = (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError,
               RuntimeError)


class NpzReader:
    """The arrays of an ``.npz`` (a zip of ``.npy`` members), read one at a time.

    Opening reads the archive's directory and every member's ``.npy`` header,
    and checks that each member may inflate to its declared size and that
    each declared shape and dtype accounts exactly for the member's bytes;
    :meth:`read` then reads one array. Nothing is allocated from a declared
    size that the file does not hold.

    Parameters
    ----------
    fp : seekable binary file object
    size : int
        Bytes in ``fp`` (the archive's size on disk).
    where : str
        Names the file in error messages.
    kinds : str
        The dtype kinds accepted (``numpy.dtype.kind``); object arrays never are.

    Each array may be read once: a description that names one array for
    many weights would otherwise take memory in proportion to the names,
    not to the file (fastrnn writes each array once).
    """

    def __init__(self, fp, size, where, kinds="fiub"):
        self.where = where
        self._read = set()
        try:
            self._zip = zipfile.ZipFile(fp)
        except _UNREADABLE + (zipfile.LargeZipFile, ValueError) as exc:
            raise ValueError(f"{where}: not a readable .npz archive: {exc}") from exc
        self._limit = inflate_limit(size)
        self._members = {}
        for info in self._zip.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            what = f"{where}: array {key!r}"
            member_info(self._zip, info.filename, self._limit, where)
            try:
                with self._zip.open(info) as member:
                    shape, fortran, dtype, offset = _npy_header(member, what)
            except _UNREADABLE as exc:
                raise ValueError(f"{what}: unreadable member: {exc}") from exc
            if dtype.hasobject or dtype.kind not in kinds:
                raise ValueError(f"{what} has dtype {dtype}; expected numbers "
                                 "(pickled objects are never read)")
            if dtype.itemsize == 0:  # (its declared shape would take no bytes)
                raise ValueError(f"{what} has dtype {dtype}, whose items hold no bytes")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if offset + nbytes != info.file_size:
                raise ValueError(
                    f"{what} declares shape {shape} of {dtype} ({_human(nbytes)}) but its "
                    f"member holds {_human(max(info.file_size - offset, 0))} of data")
            self._members[key] = (info, shape, fortran, dtype, offset)

    @property
    def names(self):
        """The arrays' names, in the archive's order."""
        return list(self._members)

    def __contains__(self, name):
        return name in self._members

    def __getitem__(self, name):
        return self.read(name)

    def shape(self, name):
        return self._members[name][1]

    def dtype(self, name):
        return self._members[name][3]

    def read(self, name):
        """Array ``name`` (read-only); ``zipfile`` checks the member's CRC-32.

        Raises ``KeyError`` for a name the archive does not hold, and
        ``ValueError`` for a name read before.
        """
        info, shape, fortran, dtype, offset = self._members[name]
        if name in self._read:
            raise ValueError(f"{self.where}: array {name!r} is named twice (each array "
                             "of a file holds one weight or state)")
        self._read.add(name)
        try:  # at most the declared size, which the header accounts for
            raw = self._zip.read(info)
        except _UNREADABLE as exc:
            raise ValueError(f"{self.where}: array {name!r} is truncated or corrupted: "
                             f"{exc}") from exc
        count = int(np.prod(shape, dtype=object))
        flat = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape, order="F" if fortran else "C")

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------- configs


def defer_build(spec):
    """A copy of a serialised layer without the shape arguments that build weights.

    A recurrent layer given ``input_dim``, ``input_shape`` or
    ``batch_input_shape`` builds random weights of that size when it is
    made; a loader instead makes it unbuilt, sets the file's weights (which
    build it at their own size), and then checks the declared size with
    :func:`check_features`. ``batch_input_shape[0]`` (a stateful layer's
    batch) is kept as ``batch_size``. ``Bidirectional``'s inner layers are
    handled the same way.

    Parameters
    ----------
    spec : dict
        ``{"class_name", "config"}``.

    Returns
    -------
    (dict, list of (str, object))
        The copy, and each declared feature count with the argument that
        declared it.
    """
    spec = copy.deepcopy(spec)
    declared = []
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        return spec, declared
    config = spec["config"]
    if spec.get("class_name") == "Bidirectional":
        # (Keras 2 writes a first layer's input shape on the wrapper: its
        # batch is the inner layers' batch_size, as theirs would be)
        batch = _pop_shapes(config, declared)
        for key in ("layer", "backward_layer"):
            if isinstance(config.get(key), dict):
                if batch is not None and isinstance(config[key].get("config"), dict):
                    inner_config = config[key]["config"]
                    if inner_config.get("batch_size") not in (None, batch):
                        raise ValueError(f"batch_input_shape[0]={batch!r} and the {key}'s "
                                         f"batch_size={inner_config['batch_size']!r} differ")
                    inner_config["batch_size"] = batch
                config[key], inner = defer_build(config[key])
                declared += inner
        return spec, declared
    if spec.get("class_name") not in _RECURRENT:
        return spec, declared
    batch = _pop_shapes(config, declared)
    if batch is not None:
        if config.get("batch_size") not in (None, batch):
            raise ValueError(f"batch_input_shape[0]={batch!r} and batch_size="
                             f"{config['batch_size']!r} differ")
        config["batch_size"] = batch
    return spec, declared


def _pop_shapes(config, declared):
    """Pop ``config``'s shape arguments; append each declared feature count
    with its argument to ``declared``; return ``batch_input_shape[0]``."""
    given = {k: config.pop(k) for k in _SHAPE_KEYS if k in config}
    given = {k: v for k, v in given.items() if v is not None}
    if "input_dim" in given:
        declared.append(("input_dim", given["input_dim"]))
    batch = None
    for key, axes in (("input_shape", "(time, features)"),
                      ("batch_input_shape", "(batch, time, features)")):
        shape = given.get(key)
        if shape is None:
            continue
        if not isinstance(shape, (list, tuple)) or len(shape) != axes.count(",") + 1:
            raise ValueError(f"{key}: expected {axes}, got {shape!r}")
        time = shape[-2]
        if time is not None and (isinstance(time, bool) or not isinstance(time, int)
                                 or time < 1):
            raise ValueError(f"{key}[{len(shape) - 2}]: expected None or a positive number "
                             f"of time steps, got {time!r}")
        declared.append((f"{key}[{len(shape) - 1}]", shape[-1]))
        if key == "batch_input_shape":
            batch = shape[0]
    return batch


def check_features(declared, features, where):
    """Check the feature counts a config declared against the built layer's ``features``."""
    for argument, value in declared:
        if value != features:
            raise ValueError(f"{where}: the config declares {argument}={value!r} input "
                             f"features, but the weights in the file are for {features}")

"""Read TensorFlow's tensor-bundle checkpoints with NumPy alone.

A TensorFlow checkpoint (TF1 ``tf.train.Saver``, TF2 ``tf.train.Checkpoint``,
Keras 2 ``save_weights`` in the TF format, and the ``variables/`` of a
SavedModel) is a *tensor bundle*: a prefix ``P`` with

``P.index``
    An immutable sorted string table in leveldb's table format: data blocks
    of prefix-compressed keys with restart points, an index block pointing
    at them, a metaindex block, and a 48-byte footer ending in a magic
    number. Every block is followed by a type byte (0: stored, 1: snappy)
    and a masked CRC-32C. The key ``""`` holds a ``BundleHeaderProto``
    (number of shards, byte order, format version); every other key is a
    tensor name holding a ``BundleEntryProto`` (dtype, shape, shard, offset,
    size, masked CRC-32C of the bytes, and for a partitioned variable the
    slices it was saved in).
``P.data-0000k-of-0000N``
    The shards: raw tensor bytes at the offsets the entries give.

The few protobuf messages involved are decoded here by a small wire-format
reader, so neither TensorFlow nor the ``protobuf`` package is needed. Every
tensor's CRC-32C is checked. Every size a file declares is checked against
the file's real size before anything is read, so a damaged or hostile file
is a ``ValueError`` naming the file and the problem, never a crash or an
allocation the file did not pay for. Bytes are paid for once: as in every
file TensorFlow writes, no two tensors (or slices of a partitioned
variable) may share bytes of a shard, and the index may not list a data
block twice, so what is read and returned is bounded by the files' sizes.

TensorFlow has written its index blocks uncompressed since release 1.2
(``TableBuilderOptions`` in ``tensor_bundle.cc`` sets ``kNoCompression``);
a snappy-compressed block (from an older TensorFlow) is refused with a
``ValueError`` saying so.

This module imports nothing from fastrnn. It is long because it is one
file format end to end: the table reader, the protobuf fields, the CRC and
the checks of every size a file declares.
"""

from __future__ import annotations

import functools
import itertools
import os
import re

import numpy as np

__all__ = ["BundleReader", "read_tf_checkpoint", "resolve_prefix", "parse_message",
           "number", "message", "messages", "masked_crc32c", "crc32c"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_BLOCK_TRAILER = 5
_HEADER_KEY = b""
_BUNDLE_VERSION = 1  # the newest tensor-bundle format version this reader knows
# leveldb's Options::block_restart_interval, which TensorFlow's BundleWriter
# leaves at its default: every 16th key of a data block is stored whole
_RESTART_INTERVAL = 16

# DataType enum (tensorflow/core/framework/types.proto) -> NumPy dtype
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
    19: np.float16, 22: np.uint32, 23: np.uint64,
}
_BFLOAT16, _STRING = 14, 7
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128",
    19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), as leveldb and TensorFlow compute and mask it


def _make_table():
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE_LIST = _make_table()
_TABLE = np.array(_TABLE_LIST, dtype=np.uint32)


def _apply_matrix(cols, v):
    """The 32x32 GF(2) matrix with columns ``cols`` applied to the 32-bit ``v``."""
    out, i = 0, 0
    while v:
        if v & 1:
            out ^= cols[i]
        v >>= 1
        i += 1
    return out


@functools.lru_cache(maxsize=64)
def _zeros_operator(nbytes):
    """The register map of feeding ``nbytes`` zero bytes, as 32 column images.

    The CRC register update is linear over GF(2), so feeding zeros is a
    32x32 bit matrix; it is raised to the ``nbytes`` power by squaring.
    """
    power = [_TABLE_LIST[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)]
    result = [1 << i for i in range(32)]  # identity
    while nbytes:
        if nbytes & 1:
            result = [_apply_matrix(power, c) for c in result]
        nbytes >>= 1
        if nbytes:
            power = [_apply_matrix(power, c) for c in power]
    return tuple(result)


def _byte_tables(cols):
    """Four 256-entry tables applying the matrix ``cols`` one byte at a time."""
    tables = []
    for b in range(4):
        t = [0] * 256
        for v in range(1, 256):
            low = v & -v
            t[v] = t[v ^ low] ^ cols[8 * b + low.bit_length() - 1]
        tables.append(t)
    return tables


def _apply_tables(tables, v):
    t0, t1, t2, t3 = tables
    return t0[v & 0xFF] ^ t1[(v >> 8) & 0xFF] ^ t2[(v >> 16) & 0xFF] ^ t3[v >> 24]


def _crc_register_python(data, crc):
    table = _TABLE_LIST
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_register_numpy(data):
    """The CRC register after ``data`` from a zero start, for large inputs.

    The bytes are cut into ``n`` equal chunks (zeros prepended, which leave a
    zero register unchanged); the ``n`` chunk registers advance together,
    one NumPy operation per byte position, and are then combined in order
    with the matrix of feeding one chunk's worth of zeros.
    """
    size = len(data)
    width = max(256, int(np.sqrt(size)))
    chunks = -(-size // width)
    buf = np.zeros(chunks * width, dtype=np.uint8)
    buf[chunks * width - size:] = np.frombuffer(data, dtype=np.uint8)
    columns = np.ascontiguousarray(buf.reshape(chunks, width).T)
    reg = np.zeros(chunks, dtype=np.uint32)
    index = np.empty(chunks, dtype=np.uint32)
    looked_up = np.empty(chunks, dtype=np.uint32)
    for j in range(width):  # reg = table[(reg ^ byte) & 0xff] ^ (reg >> 8), in place
        np.bitwise_xor(reg, columns[j], out=index)
        np.bitwise_and(index, 0xFF, out=index)
        np.right_shift(reg, 8, out=reg)
        np.take(_TABLE, index, out=looked_up)
        np.bitwise_xor(reg, looked_up, out=reg)
    shift = _byte_tables(_zeros_operator(width))
    crc = 0
    for r in reg.tolist():
        crc = _apply_tables(shift, crc) ^ r
    return crc


def crc32c(data):
    """CRC-32C of ``data`` (bytes-like), as an ``int``."""
    data = memoryview(data).cast("B")
    if len(data) < 4096:
        return _crc_register_python(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    # linearity: register(data, init) = zeros_operator(len) @ init ^ register(data, 0)
    init = _apply_matrix(_zeros_operator(len(data)), 0xFFFFFFFF)
    return (init ^ _crc_register_numpy(data)) ^ 0xFFFFFFFF


def masked_crc32c(data):
    """leveldb's masked CRC-32C, the form TensorFlow stores."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------
# protobuf wire format


def _varint(buf, pos, where):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"{where}: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"{where}: varint longer than 10 bytes")


def parse_message(buf, where):
    """Decode one protobuf message into ``{field number: [values]}``.

    Varints are ``int``, fixed32/fixed64 ``int`` (little-endian), length-
    delimited fields ``bytes`` (decode nested messages with another call).
    """
    fields = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError(f"{where}: truncated fixed64 field {number}")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            if pos + n > end:
                raise ValueError(f"{where}: field {number} declares {n} bytes, "
                                 f"{end - pos} remain")
            value = bytes(buf[pos:pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError(f"{where}: truncated fixed32 field {number}")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"{where}: unsupported protobuf wire type {wire} "
                             f"(field {number})")
        if number == 0:
            raise ValueError(f"{where}: invalid protobuf field number 0")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields, number, default=0):
    values = fields.get(number)
    return values[-1] if values else default


def number(fields, number, where, default=0):
    """The numeric field ``number`` of a parsed message (``default`` when
    absent), refused if it holds bytes: a field's wire type comes from the
    file, so every read says which type it expects."""
    value = _last(fields, number, default)
    if isinstance(value, bytes):
        raise ValueError(f"{where}: field {number} holds {len(value)} bytes where a "
                         "number was expected")
    return value


def messages(fields, number, where):
    """Every value of the length-delimited field ``number`` (a nested
    message or a string), refused if one holds a number."""
    values = fields.get(number, [])
    for value in values:
        if not isinstance(value, bytes):
            raise ValueError(f"{where}: field {number} holds the number {value} where a "
                             "message or string was expected")
    return values


def message(fields, number, where, default=b""):
    """The last value of the length-delimited field ``number`` (``default``
    when absent), refused if it holds a number."""
    values = messages(fields, number, where)
    return values[-1] if values else default


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_or_repeated(fields, number, where):
    """A repeated varint field, whether written packed or not."""
    out = []
    for v in fields.get(number, []):
        if isinstance(v, bytes):
            pos = 0
            while pos < len(v):
                x, pos = _varint(v, pos, where)
                out.append(x)
        else:
            out.append(v)
    return out


# --------------------------------------------------------------------------
# leveldb table


def _read_block(data, handle, path, what):
    """The contents of the block at ``handle`` (offset, size), its CRC checked."""
    offset, size = handle
    if offset + size + _BLOCK_TRAILER > len(data) - _FOOTER:
        raise ValueError(f"{path}: the {what} block (offset {offset}, {size} bytes) runs "
                         f"past the end of the file ({len(data)} bytes): truncated .index?")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    if masked_crc32c(data[offset:offset + size + 1]) != stored:
        raise ValueError(f"{path}: the {what} block fails its CRC-32C check (the .index file "
                         "is corrupted)")
    if kind == 1:
        raise ValueError(f"{path}: the {what} block is snappy-compressed; TensorFlow has "
                         "written uncompressed checkpoint indexes since 1.2 and this reader "
                         "does not decompress snappy: re-save the checkpoint with a newer "
                         "TensorFlow")
    if kind != 0:
        raise ValueError(f"{path}: the {what} block has unknown compression type {kind}")
    return contents


def _block_entries(block, path, what):
    """``(key, value)`` pairs of a block, keys restored from their shared prefixes.

    A key stores only the bytes it does not share with the key before it,
    so a chain of keys each one byte longer than the last would cost the
    file one byte per key and the reader the whole key: memory quadratic in
    the block's size. leveldb (and so TensorFlow) writes a whole key every
    ``_RESTART_INTERVAL`` keys, which keeps the keys of a real block within
    ``_RESTART_INTERVAL`` times its bytes; a block whose keys pass that is
    refused before they grow further.
    """
    where = f"{path}: {what} block"
    if len(block) < 4:
        raise ValueError(f"{where} is shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (restarts + 1)
    if restarts < 1 or limit < 0:
        raise ValueError(f"{where} declares {restarts} restart points, which do not fit "
                         f"in its {len(block)} bytes")
    out, key, pos = [], b"", 0
    key_budget = _RESTART_INTERVAL * len(block)
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        vlen, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise ValueError(f"{where}: an entry runs past the block's end")
        key_budget -= shared + unshared
        if key_budget < 0:
            raise ValueError(f"{where}: its keys, restored from their shared prefixes, "
                             f"take more than {_RESTART_INTERVAL} times the block's "
                             f"{len(block)} bytes; a table written by TensorFlow stores a "
                             f"whole key every {_RESTART_INTERVAL} keys, which keeps them "
                             "within that")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        out.append((key, bytes(block[pos:pos + vlen])))
        pos += vlen
    return out


def _handle(buf, pos, where):
    offset, pos = _varint(buf, pos, where)
    size, pos = _varint(buf, pos, where)
    return (offset, size), pos


def _read_table(path):
    """Every ``key -> value`` of the leveldb table file ``path``."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _FOOTER:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than the {_FOOTER}-byte "
                         "footer of a checkpoint index (truncated .index?)")
    footer = data[-_FOOTER:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != _MAGIC:
        raise ValueError(f"{path}: not a TensorFlow checkpoint index (wrong magic number "
                         f"{magic:#018x}, expected {_MAGIC:#018x}; truncated or not a "
                         ".index file)")
    where = f"{path}: footer"
    _, pos = _handle(footer, 0, where)       # metaindex: unused (no filters)
    index, _ = _handle(footer, pos, where)
    handles = [_handle(value, 0, f"{path}: index entry")[0]
               for _, value in _block_entries(_read_block(data, index, path, "index"),
                                              path, "index")]
    _check_blocks_disjoint(handles, path)
    entries = []
    for handle in handles:
        entries += _block_entries(_read_block(data, handle, path, "data"), path, "data")
    return dict(entries)


def _check_blocks_disjoint(handles, path):
    """Refuse index entries whose data blocks share bytes of the file.

    leveldb writes each data block once, one after the other, so the blocks
    the index lists (with their 5-byte trailers) never overlap. An index
    listing one block many times, or blocks nested in one another, would
    have the reader copy and parse the same bytes once per listing; refused
    here, before any data block is read, this bounds the work of reading a
    table by the size of its file.
    """
    # sorted by offset, the blocks are apart when each ends before the next starts
    spans = sorted(handles)
    for first, second in zip(spans, spans[1:]):
        if second[0] < first[0] + first[1] + _BLOCK_TRAILER:
            if first == second:
                problem = (f"lists the data block at offset {first[0]} ({first[1]} bytes) "
                           "more than once")
            else:
                problem = (f"lists data blocks at offset {first[0]} ({first[1]} bytes) and "
                           f"at offset {second[0]} ({second[1]} bytes), which overlap")
            raise ValueError(f"{path}: the index block {problem}: a table written by "
                             "TensorFlow stores each data block once, apart from the others")


# --------------------------------------------------------------------------
# bundle entries


class _Entry:
    __slots__ = ("name", "dtype", "shape", "shard", "offset", "size", "crc", "slices")

    def __init__(self, name, value, where):
        f = parse_message(value, where)
        self.name = name
        self.dtype = number(f, 1, where)
        at = where + " shape"
        shape = parse_message(message(f, 2, where), at)
        if number(shape, 3, at):
            raise ValueError(f"{where}: the tensor has an unknown rank")
        dims = []
        for d in messages(shape, 2, at):
            size = _signed64(number(parse_message(d, at), 1, at))
            if size < 0:
                raise ValueError(f"{where}: negative dimension {size}")
            dims.append(size)
        self.shape = tuple(dims)
        self.shard = number(f, 3, where)
        self.offset = number(f, 4, where)
        self.size = number(f, 5, where)
        self.crc = number(f, 6, where, None)
        self.slices = []
        at = where + " slice"
        for s in messages(f, 7, where):
            extents = []
            for e in messages(parse_message(s, at), 1, at):
                ef = parse_message(e, at + " extent")
                start = _signed64(number(ef, 1, at + " extent"))
                # (absent: the full extent)
                length = _signed64(number(ef, 2, at + " extent")) if 2 in ef else -1
                extents.append((start, length))
            self.slices.append(extents)


def _dtype_name(code):
    """TensorFlow's name of ``DataType`` ``code``."""
    return _DTYPE_NAMES.get(code, f"DataType {code}")


def _ordered_string(s):
    # strings::OrderedCode::WriteString: 0x00 -> 00 ff, 0xff -> ff 00, then <sep> 00 01
    escape = {0: b"\x00\xff", 255: b"\xff\x00"}
    return b"".join(escape.get(b, bytes([b])) for b in s) + b"\x00\x01"


def _ordered_num(n):
    # OrderedCode::WriteNumIncreasing: a length byte, then big-endian bytes
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _ordered_signed(n):
    # OrderedCode::WriteSignedNumIncreasing
    x = ~n if n < 0 else n
    if x < 64:
        return bytes([(0x80 ^ n) & 0xFF])
    length = -(-(x.bit_length() + 1) // 7)
    header = {2: (0xC0, 0), 3: (0xE0, 0), 4: (0xF0, 0), 5: (0xF8, 0), 6: (0xFC, 0),
              7: (0xFE, 0), 8: (0xFF, 0), 9: (0xFF, 0x80), 10: (0xFF, 0xC0)}[length]
    buf = bytearray(n.to_bytes(10, "big", signed=True)[10 - length:])
    buf[0] ^= header[0]
    buf[1] ^= header[1]
    return bytes(buf)


def _slice_key(name, extents):
    """The key a slice of ``name`` is stored under (checkpoint::EncodeTensorNameSlice)."""
    key = _ordered_num(0) + _ordered_string(name) + _ordered_num(len(extents))
    for start, length in extents:
        key += _ordered_signed(start) + _ordered_signed(length)
    return key


def _slice_name(key):
    """The tensor name a slice key begins with (the inverse of the start of
    :func:`_slice_key`), or ``None`` when ``key`` does not decode."""
    if key[:1] != b"\x00":
        return None
    out, i = bytearray(), 1
    while i + 1 < len(key):
        b, nxt = key[i], key[i + 1]
        if b == 0 and nxt == 1:  # the separator ending the string
            return out.decode("utf-8", errors="replace")
        if b in (0, 255):  # an escaped 0x00 (00 ff) or 0xff (ff 00)
            out.append(b)
            i += 2
        else:
            out.append(b)
            i += 1
    return None


def resolve_prefix(path):
    """The checkpoint prefix ``path`` names.

    ``path`` may be the prefix itself (``model.ckpt``), its ``.index``,
    ``.meta`` or a ``.data-*`` file, a directory holding a ``checkpoint``
    file (the latest checkpoint it names is used) or a single ``.index``
    file, or a SavedModel directory (its ``variables/variables``).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 20)
            m = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
            if not m:
                raise ValueError(f"{state}: no model_checkpoint_path line")
            prefix = m.group(1)
            if "\\" in prefix:  # a C-escaped text-format string (UTF-8 bytes)
                try:
                    prefix = prefix.encode("utf-8").decode("unicode_escape").encode(
                        "latin-1").decode("utf-8", errors="replace")
                except UnicodeError as exc:
                    raise ValueError(f"{state}: model_checkpoint_path holds an invalid escape "
                                     f"({exc.reason})") from exc
            path = prefix if os.path.isabs(prefix) else os.path.join(path, prefix)
        elif os.path.isfile(os.path.join(path, "variables", "variables.index")):
            return os.path.join(path, "variables", "variables")
        else:
            found = sorted(os.listdir(path))
            indexes = [n for n in found if n.endswith(".index")]
            if len(indexes) != 1:
                raise ValueError(f"{path}: a directory without a 'checkpoint' file, a "
                                 "SavedModel's variables/variables.index or a single .index "
                                 f"file; it holds {found[:20]}: pass the checkpoint prefix")
            path = os.path.join(path, indexes[0][:-len(".index")])
    m = re.match(r"^(.*)\.(index|meta|data-\d{5}-of-\d{5})$", path)
    if m and not os.path.isfile(path + ".index"):
        path = m.group(1)
    if not os.path.isfile(path + ".index"):
        if os.path.isfile(path):
            raise ValueError(f"{path}: no {os.path.basename(path)}.index beside it; a "
                             "TensorFlow checkpoint is a prefix with .index and .data-* files "
                             "(the old single-file V1 format is not supported)")
        raise FileNotFoundError(f"no TensorFlow checkpoint at {path!r} ({path}.index "
                                "does not exist)")
    return path


class BundleReader:
    """The tensors of one checkpoint, read on demand.

    Parameters
    ----------
    path : str or os.PathLike
        See :func:`resolve_prefix`.

    Attributes
    ----------
    prefix : str
        The checkpoint prefix.
    num_shards : int
    """

    def __init__(self, path):
        self.prefix = resolve_prefix(path)
        self.index_path = self.prefix + ".index"
        table = _read_table(self.index_path)
        if _HEADER_KEY not in table:
            raise ValueError(f"{self.index_path}: no bundle header (not a tensor-bundle index)")
        where = f"{self.index_path}: header"
        header = parse_message(table.pop(_HEADER_KEY), where)
        self.num_shards = number(header, 1, where)
        self._big_endian = number(header, 2, where) == 1
        version = parse_message(message(header, 3, where), where + " version")
        min_consumer = number(version, 2, where + " version")
        if min_consumer > _BUNDLE_VERSION:
            raise ValueError(f"{self.index_path}: written in tensor-bundle format version "
                             f"{number(version, 1, where)} for readers of version >= "
                             f"{min_consumer}; "
                             f"this reader knows version {_BUNDLE_VERSION}")
        if _BUNDLE_VERSION in _packed_or_repeated(version, 3, self.index_path):
            raise ValueError(f"{self.index_path}: the file marks format version "
                             f"{_BUNDLE_VERSION} readers as unable to read it")
        if self.num_shards < 1 and len(table) > 0:
            raise ValueError(f"{self.index_path}: the header declares {self.num_shards} shards")
        self._entries, self._slices = {}, {}
        for key, value in table.items():
            if key[:1] == b"\x00":  # a slice of a partitioned variable
                self._slices[key] = value
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                name = key.decode("latin-1")
            self._entries[name] = value
        self._check_disjoint()

    def _check_disjoint(self):
        """Refuse entries that share bytes of a shard.

        TensorFlow writes each tensor, and each slice of a partitioned
        variable, once, one after another, so no two entries' bytes overlap
        in a shard. Entries pointing at the same bytes would let a file the
        size of one tensor return that tensor once per entry. Refused here,
        before any data is read, every byte of a shard belongs to at most
        one tensor, so what a reader returns is bounded by its shards'
        sizes. Only the shard, offset and size of each entry are decoded;
        an entry whose fields do not decode is left out here, as reading it
        fails before any of its bytes are read. Empty tensors hold no bytes
        and may share an offset.
        """
        spans = []
        for key, value in itertools.chain(self._entries.items(), self._slices.items()):
            try:
                f = parse_message(value, self.index_path)
                shard, offset, size = (number(f, n, self.index_path) for n in (3, 4, 5))
            except ValueError:
                continue
            if size:
                spans.append((shard, offset, size, key))
        # sorted by shard and offset, the entries are apart when each ends
        # before the next one in its shard starts
        spans.sort(key=lambda span: span[:3])
        for (shard, offset, size, a), (next_shard, next_offset, next_size, b) in zip(
                spans, spans[1:]):
            end = offset + size
            if shard == next_shard and next_offset < end:
                shared = min(end, next_offset + next_size) - next_offset
                raise ValueError(
                    f"{self.index_path}: {self._label(a)} and {self._label(b)} share "
                    f"{shared} bytes at offset {next_offset} of shard {shard} "
                    f"({self._shard_path(shard)}): a checkpoint written by TensorFlow gives "
                    "each tensor its own bytes")

    def _label(self, key):
        """How an error names the entry stored under ``key``."""
        if isinstance(key, str):
            return f"entry {key!r}"
        name = _slice_name(key)
        if name is None:
            return f"slice entry {key!r}"
        if name in self._entries:  # find the extents that give this key
            try:
                for extents in self.entry(name).slices:
                    if _slice_key(name.encode("utf-8"), extents) == key:
                        return f"slice {extents} of {name!r}"
            except ValueError:
                pass
        return f"a slice of {name!r}"

    # -- structure -------------------------------------------------------
    def keys(self):
        """Tensor names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def entry(self, name):
        """The decoded ``BundleEntryProto`` of ``name``."""
        if name not in self._entries:
            raise KeyError(name)
        return _Entry(name, self._entries[name], f"{self.index_path}: entry {name!r}")

    def dtype_name(self, name):
        """TensorFlow's name of the dtype of ``name`` (``"float32"``, ``"bfloat16"``, ...)."""
        return _dtype_name(self.entry(name).dtype)

    def shape(self, name):
        return self.entry(name).shape

    def missing(self, name, what="tensor"):
        """The ``ValueError`` for a name that is not in the checkpoint."""
        import difflib

        close = difflib.get_close_matches(name, self.keys(), n=5, cutoff=0.5)
        hint = f"; close names: {close}" if close else f"; it holds {len(self._entries)} tensors"
        return ValueError(f"{self.prefix}: no {what} {name!r} in the checkpoint{hint}")

    # -- data ------------------------------------------------------------
    def _shard_path(self, shard):
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def _check_extent(self, e, where):
        """The shard file holding ``e``, checked to hold all its declared bytes."""
        if e.shard >= self.num_shards:
            raise ValueError(f"{where}: stored in shard {e.shard}, but the header declares "
                             f"{self.num_shards} shards")
        shard = self._shard_path(e.shard)
        if not os.path.isfile(shard):
            raise ValueError(f"{where}: its shard {shard} is missing")
        have = os.path.getsize(shard)
        if e.offset + e.size > have:
            raise ValueError(f"{where}: {e.size} bytes at offset {e.offset} run past the end "
                             f"of {shard} ({have} bytes): truncated data file")
        return shard

    def _bytes(self, e, where, check=True):
        shard = self._check_extent(e, where)
        with open(shard, "rb") as f:
            f.seek(e.offset)
            data = f.read(e.size)
        if len(data) != e.size:
            raise ValueError(f"{where}: short read from {shard}")
        if check and e.crc is not None and masked_crc32c(data) != e.crc:
            raise ValueError(f"{where}: its bytes in {shard} fail the CRC-32C check (the data "
                             "file is corrupted)")
        return data

    def _decode(self, e, where):
        count = 1
        for d in e.shape:
            count *= d
        if e.dtype == _STRING:
            return self._strings(e, count, where)
        np_dtype = self._fixed_size(e, count, where)
        data = self._bytes(e, where) if e.size else b""
        order = ">" if self._big_endian else "<"
        if np_dtype is None:
            bits = np.frombuffer(data, dtype=order + "u2").astype(np.uint32) << np.uint32(16)
            return bits.view(np.float32).reshape(e.shape)
        return np.frombuffer(data, dtype=np_dtype.newbyteorder(order)).astype(
            np_dtype).reshape(e.shape)

    @staticmethod
    def _fixed_size(e, count, where):
        """The NumPy dtype of the non-string entry ``e`` (``None`` for bfloat16),
        its declared size checked to be exactly what ``count`` elements need."""
        if e.dtype == _BFLOAT16:
            itemsize, np_dtype = 2, None
        elif e.dtype in _DTYPES:
            np_dtype = np.dtype(_DTYPES[e.dtype])
            itemsize = np_dtype.itemsize
        else:
            raise ValueError(f"{where}: dtype {_DTYPE_NAMES.get(e.dtype, e.dtype)} is not "
                             "supported (floats, bfloat16, integers, bool, complex and "
                             "strings are)")
        if count * itemsize != e.size:
            raise ValueError(f"{where}: shape {e.shape} of {_DTYPE_NAMES[e.dtype]} needs "
                             f"{count * itemsize} bytes, the entry declares {e.size}")
        return np_dtype

    def _strings(self, e, count, where):
        """A string tensor: varint64 lengths, a masked CRC-32C of the lengths,
        then the bytes. The entry's CRC covers each length as a little-endian
        uint32 (uint64 above 2**32 - 1), that checksum, and the bytes."""
        data = self._bytes(e, where, check=False) if e.size else b""
        lengths, pos = [], 0
        for _ in range(count):
            n, pos = _varint(data, pos, where)
            lengths.append(n)
        if pos + 4 + sum(lengths) != len(data):
            raise ValueError(f"{where}: string lengths do not add up to the entry's size")
        if e.crc is not None and count:
            packed = b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little")
                              for n in lengths)
            if masked_crc32c(packed + data[pos:]) != e.crc:
                raise ValueError(f"{where}: its bytes in {self._shard_path(e.shard)} fail the "
                                 "CRC-32C check (the data file is corrupted)")
        pos += 4
        out = np.empty(count, dtype=object)
        for i, n in enumerate(lengths):
            out[i] = data[pos:pos + n]
            pos += n
        return out.reshape(e.shape)

    def read(self, name):
        """The tensor ``name`` as a NumPy array (bfloat16 as float32; strings
        as an object array of ``bytes``)."""
        if name not in self._entries:
            raise self.missing(name)
        e = self.entry(name)
        where = f"{self.prefix}: tensor {name!r}"
        if not e.slices:
            return self._decode(e, where)
        return self._join(e, where)

    def _join(self, e, where):
        """A partitioned variable, assembled from its saved slices.

        The slices' entries are checked before the whole tensor is
        allocated: each slice is listed once, its declared size is what its
        shape needs and lies within its shard, and the tensor's element
        count may not exceed the elements the slices hold. As no two slices
        share bytes of a shard (checked when the index is opened), the
        tensor is no larger than the bytes its slices hold.
        """
        parts, held, seen = [], 0, set()
        for extents in e.slices:
            if tuple(extents) in seen:
                raise ValueError(f"{where}: it lists the slice {extents} more than once; "
                                 "TensorFlow saves each slice of a partitioned variable once")
            seen.add(tuple(extents))
            if len(extents) != len(e.shape):
                raise ValueError(f"{where}: a slice has {len(extents)} dimensions, the "
                                 f"tensor {len(e.shape)}")
            index = []
            for (start, length), dim in zip(extents, e.shape):
                stop = dim if length < 0 else start + length
                if not 0 <= start <= stop <= dim:
                    raise ValueError(f"{where}: slice {extents} is outside shape {e.shape}")
                index.append(slice(start, stop))
            key = _slice_key(e.name.encode("utf-8"), extents)
            if key not in self._slices:
                raise ValueError(f"{where}: the slice {extents} it lists is not in "
                                 f"{self.index_path}")
            part = _Entry(e.name, self._slices[key], f"{where} slice {extents}")
            if part.dtype != e.dtype:  # (the slices would be cast into the first one's dtype)
                raise ValueError(f"{where}: slice {extents} holds {_dtype_name(part.dtype)}, "
                                 f"the variable is {_dtype_name(e.dtype)}; TensorFlow saves "
                                 "every slice in the variable's dtype")
            self._check_extent(part, f"{where} slice {extents}")
            count = 1
            for s in index:
                count *= s.stop - s.start
            if part.shape != tuple(s.stop - s.start for s in index):
                raise ValueError(f"{where}: slice {extents} holds shape {part.shape}")
            # the slice's size must pay for its elements before they count as held
            if part.dtype != _STRING:
                self._fixed_size(part, count, f"{where} slice {extents}")
            elif part.size < count:  # each string's length takes at least a byte
                raise ValueError(f"{where}: slice {extents} of {count} strings declares "
                                 f"{part.size} bytes")
            held += count
            parts.append((tuple(index), part, f"{where} slice {extents}"))
        total = 1
        for d in e.shape:
            total *= d
        if not parts or total > held:
            raise ValueError(f"{where}: its slices hold {held} of its {total} elements")
        full = covered = None
        for index, part, label in parts:
            value = self._decode(part, label)
            if full is None:
                full = np.zeros(e.shape, dtype=value.dtype)
                covered = np.zeros(e.shape, dtype=bool)
            full[index] = value
            covered[index] = True
        if not covered.all():
            raise ValueError(f"{where}: its slices do not cover the whole tensor {e.shape}")
        return full


def read_tf_checkpoint(path, names=None):
    """Every tensor of a TensorFlow checkpoint, without TensorFlow.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint prefix (``model.ckpt``, as passed to
        ``Saver.restore``), its ``.index`` file, a directory with a
        ``checkpoint`` file (the latest checkpoint) or a single ``.index``
        file, or a SavedModel directory (its variables).
    names : iterable of str, optional
        Read only these tensors (default: all).

    Returns
    -------
    dict of str to np.ndarray
        Tensor name -> array, in the checkpoint's dtype (bfloat16 widened to
        float32, which is exact; strings as object arrays of ``bytes``).
        Partitioned variables are returned whole, joined from their slices.

    Raises
    ------
    ValueError
        A truncated or corrupted file (naming the file and, for data, the
        tensor whose CRC-32C fails), a missing shard, a name not in the
        checkpoint, an unsupported dtype, tensors that share bytes of a
        shard or an index that lists a data block more than once.
    FileNotFoundError
        No checkpoint at ``path``.
    """
    reader = BundleReader(path)
    wanted = reader.keys() if names is None else list(names)
    return {name: reader.read(name) for name in wanted}

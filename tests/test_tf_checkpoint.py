"""TensorFlow's own checkpoints and Keras 2 SavedModels, read without TensorFlow.

The fixtures in ``tests/data/tf/`` were written by TensorFlow 2.21 and
tf_keras (``tests/data/tf/make_fixtures.py``), each with the outputs
TensorFlow computed. One subprocess, in which ``tensorflow``, ``keras``,
``tf_keras`` and ``h5py`` cannot be imported, loads every fixture and runs it
on every backend under test (``reference``, ``cpu``, and ``cuda`` with
``FASTRNN_TEST_BACKENDS=cuda``); the tests compare what it computed with
TensorFlow's outputs. Damaged files are made from copies of the fixtures.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, layer_backends
import fastrnn
from fastrnn import _tf_bundle, nn
from fastrnn.io import read_tf_checkpoint
from fastrnn import _nest
from fastrnn.nn import rnn_cell

TF = os.path.join(DATA, "tf")
FIXTURES = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(TF, "*", "expected.npz")))
MODELS = [f for f in FIXTURES if f != "tf1_dtypes"]
BACKENDS = layer_backends()
BLOCKED = ("tensorflow", "keras", "tf_keras", "h5py")


def _expected(name):
    data = np.load(os.path.join(TF, name, "expected.npz"))
    config = json.loads(str(data["config"]))
    return config, {k: data[k] for k in data.files if k != "config"}


def _outputs(arrays):
    return [arrays[f"y{i}"] for i in range(sum(k.startswith("y") for k in arrays))]


def _cell(spec):
    spec = dict(spec)
    cls = spec.pop("class")
    if cls == "MultiRNNCell":
        return rnn_cell.MultiRNNCell([_cell(c) for c in spec["cells"]])
    return getattr(rnn_cell, cls)(**spec)


def _run(name, backend):
    """Load fixture ``name`` from its TensorFlow files and run it on ``backend``."""
    config, arrays = _expected(name)
    path = os.path.join(TF, name)
    x = arrays["x"]
    if config["kind"] == "keras2":
        if config["save"] == "weights":
            model = fastrnn.load_keras(os.path.join(path, "ckpt"), backend=backend,
                                       config=os.path.join(path, "model.json"))
        else:
            model = fastrnn.load_keras(path, backend=backend)
        return [model.predict(x)]
    if config["kind"] == "tf1_keras":
        ckpt = nn.load_checkpoint(os.path.join(path, "model.ckpt"))
        layer = fastrnn.LSTM(6, return_sequences=True, backend=backend)
        layer.set_weights([ckpt["lstm/lstm_cell/" + n]
                           for n in ("kernel", "recurrent_kernel", "bias")])
        return [layer(x)]
    cells = [_cell(spec) for spec in config["cells"]]
    for cell, scope in zip(cells, config["scopes"]):
        cell.load_checkpoint(os.path.join(path, "model.ckpt"), scope=scope)
    lengths = arrays["lengths"]
    if config["call"] == "dynamic":
        out, state = nn.dynamic_rnn(cells[0], x, sequence_length=lengths, backend=backend)
        return [out] + _nest.flatten(state)
    if config["call"] == "bidirectional":
        (ofw, obw), (sfw, sbw) = nn.bidirectional_dynamic_rnn(
            cells[0], cells[1], x, sequence_length=lengths, backend=backend)
        return [ofw, obw] + _nest.flatten(sfw) + _nest.flatten(sbw)
    h, states = x, []
    for cell in cells:  # "stacked": one dynamic_rnn per cell, each in its own scope
        h, state = nn.dynamic_rnn(cell, h, sequence_length=lengths, backend=backend)
        states += _nest.flatten(state)
    return [h] + states


def run_all(out_dir, backends):
    """Every fixture on every backend, each result saved in ``out_dir`` (the subprocess)."""
    for name in MODELS:
        for backend in backends:
            ys = _run(name, backend)
            np.savez(os.path.join(out_dir, f"{name}__{backend}.npz"),
                     **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    values = read_tf_checkpoint(os.path.join(TF, "tf1_dtypes", "model.ckpt"))
    np.savez(os.path.join(out_dir, "tf1_dtypes.npz"), **{"v:" + k: v for k, v in values.items()})
    loaded = sorted(m for m in BLOCKED if sys.modules.get(m) is not None)
    with open(os.path.join(out_dir, "modules.json"), "w") as f:
        json.dump(loaded, f)


_SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None   # 'import name' now raises ImportError
sys.path.insert(0, {tests!r})
import test_tf_checkpoint
test_tf_checkpoint.run_all({out!r}, {backends!r})
"""


@pytest.fixture(scope="module")
def without_tf(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tf_outputs"))
    script = _SCRIPT.format(blocked=BLOCKED, tests=os.path.dirname(__file__), out=out,
                            backends=BACKENDS)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_fixtures_found():
    assert len(MODELS) >= 14 and "tf1_dtypes" in FIXTURES, FIXTURES


def test_nothing_from_tensorflow_was_imported(without_tf):
    with open(os.path.join(without_tf, "modules.json")) as f:
        assert json.load(f) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_reproduces_tensorflow(without_tf, name, backend):
    config, arrays = _expected(name)
    got = np.load(os.path.join(without_tf, f"{name}__{backend}.npz"))
    expected = _outputs(arrays)
    assert len(got.files) == len(expected)
    tol = 1e-10 if config.get("dtype") == "float64" else 1e-5
    for i, want in enumerate(expected):
        y = got[f"y{i}"]
        assert y.shape == want.shape and y.dtype == want.dtype, (i, y.shape, y.dtype)
        np.testing.assert_allclose(y, want, rtol=0, atol=tol, err_msg=f"output {i}")


def test_every_dtype_as_tensorflow_reads_it(without_tf):
    config, arrays = _expected("tf1_dtypes")
    got = np.load(os.path.join(without_tf, "tf1_dtypes.npz"))
    assert sorted(got.files) == sorted(arrays)
    for key, want in arrays.items():
        tf_dtype = config["dtypes"][key[2:]]
        assert got[key].dtype == (np.float32 if tf_dtype == "bfloat16" else np.dtype(tf_dtype))
        np.testing.assert_array_equal(got[key], want, err_msg=key)


# ------------------------------------------------------------------ the reader itself


def test_crc32c_check_value_and_both_paths():
    # The CRC-32C check value of the ASCII digits (RFC 3720, appendix B.4).
    assert _tf_bundle.crc32c(b"123456789") == 0xE3069283
    data = np.random.default_rng(5).integers(0, 256, 30011, dtype=np.uint8).tobytes()
    byte_loop = _tf_bundle._crc_register_python(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    assert _tf_bundle.crc32c(data) == byte_loop  # the chunked NumPy path


@pytest.mark.parametrize("form", ["prefix", "index", "data", "directory"])
def test_path_forms(form):
    d = os.path.join(TF, "tf1_sharded")
    path = {"prefix": os.path.join(d, "model.ckpt"),
            "index": os.path.join(d, "model.ckpt.index"),
            "data": os.path.join(d, "model.ckpt.data-00001-of-00002"),
            "directory": d}[form]
    reader = _tf_bundle.BundleReader(path)
    assert reader.prefix == os.path.join(d, "model.ckpt") and reader.num_shards == 2
    assert reader.keys() == sorted(v[:-2] for v in _expected("tf1_sharded")[0]["variables"])


def test_saved_model_directory_reads_its_variables():
    values = read_tf_checkpoint(os.path.join(TF, "keras2_gru_functional"))
    assert values["_CHECKPOINTABLE_OBJECT_GRAPH"].dtype == object
    assert any(k.endswith("VARIABLE_VALUE") for k in values)


def test_no_checkpoint_here(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.index"):
        read_tf_checkpoint(tmp_path / "nope")
    with pytest.raises(ValueError, match="without a 'checkpoint' file"):
        read_tf_checkpoint(tmp_path)
    for name in ("a", "b"):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(os.path.join(TF, "tf1_gru", "model.ckpt" + suffix), tmp_path / (name + suffix))
    with pytest.raises(ValueError, match=r"a single .index file.*pass the checkpoint prefix"):
        read_tf_checkpoint(tmp_path)
    (tmp_path / "b.index").unlink()
    assert _tf_bundle.BundleReader(tmp_path).prefix == str(tmp_path / "a")


# ------------------------------------------------------------------ damaged files


def _copy(tmp_path, name="tf1_sharded"):
    dst = tmp_path / name
    shutil.copytree(os.path.join(TF, name), dst)
    return dst


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_truncated_index(tmp_path):
    index = _copy(tmp_path) / "model.ckpt.index"
    blob = index.read_bytes()
    index.write_bytes(blob[:20])
    with pytest.raises(ValueError, match=r"model.ckpt.index: 20 bytes, shorter than the 48-byte"):
        read_tf_checkpoint(index)
    index.write_bytes(blob[:-7])
    with pytest.raises(ValueError, match="wrong magic number.*truncated"):
        read_tf_checkpoint(index)


def test_wrong_magic(tmp_path):
    index = _copy(tmp_path) / "model.ckpt.index"
    _patch(index, index.stat().st_size - 3, b"\x00")
    with pytest.raises(ValueError, match="not a TensorFlow checkpoint index"):
        read_tf_checkpoint(index)


def test_flipped_byte_in_the_index(tmp_path):
    index = _copy(tmp_path) / "model.ckpt.index"
    blob = bytearray(index.read_bytes())
    blob[40] ^= 0x20  # inside the first data block
    index.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="block fails its CRC-32C check"):
        read_tf_checkpoint(index)


def test_snappy_block_is_refused(tmp_path):
    index = _copy(tmp_path) / "model.ckpt.index"
    blob = bytearray(index.read_bytes())
    footer = bytes(blob[-48:])
    _, pos = _tf_bundle._handle(footer, 0, "footer")
    (offset, size), _ = _tf_bundle._handle(footer, pos, "footer")
    blob[offset + size] = 1  # the index block's type byte: snappy
    crc = _tf_bundle.masked_crc32c(bytes(blob[offset:offset + size + 1]))
    blob[offset + size + 1:offset + size + 5] = crc.to_bytes(4, "little")
    index.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="snappy-compressed"):
        read_tf_checkpoint(index)


def test_flipped_byte_in_a_data_shard_names_the_tensor(tmp_path):
    d = _copy(tmp_path)
    reader = _tf_bundle.BundleReader(d)
    entry = reader.entry("layer2/gru_cell/candidate/kernel")
    shard = d / f"model.ckpt.data-{entry.shard:05d}-of-00002"
    blob = bytearray(shard.read_bytes())
    blob[entry.offset + 5] ^= 0x01
    shard.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"'layer2/gru_cell/candidate/kernel'.*"
                                         r"fail the CRC-32C check"):
        read_tf_checkpoint(d)
    cell = rnn_cell.GRUCell(4)
    with pytest.raises(ValueError, match="candidate/kernel"):
        cell.load_checkpoint(d, scope="layer2")
    assert not cell.built  # nothing was set
    rnn_cell.LSTMCell(5).load_checkpoint(d, scope="layer1")  # the other tensors are intact


def test_missing_and_truncated_shard(tmp_path):
    d = _copy(tmp_path)
    reader = _tf_bundle.BundleReader(d)
    shard = reader.entry("layer2/gru_cell/gates/kernel").shard
    path = d / f"model.ckpt.data-{shard:05d}-of-00002"
    blob = path.read_bytes()
    path.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match="run past the end of .*truncated data file"):
        rnn_cell.GRUCell(4).load_checkpoint(d, scope="layer2")
    path.unlink()
    with pytest.raises(ValueError, match=f"its shard .*data-{shard:05d}-of-00002 is missing"):
        read_tf_checkpoint(d)


def test_missing_variable_names_it_and_the_scopes_that_hold_it():
    path = os.path.join(TF, "tf1_bidirectional", "model.ckpt")
    with pytest.raises(ValueError, match=r"no variable 'rnn/basic_lstm_cell/kernel'.*"
                                         r"\['bidirectional_rnn/fw'\]"):
        rnn_cell.BasicLSTMCell(5).load_checkpoint(path)
    with pytest.raises(ValueError, match=r"no tensor 'bidirectional_rnn/fw/kernel'"):
        read_tf_checkpoint(path, names=["bidirectional_rnn/fw/kernel"])
    with pytest.raises(ValueError, match=r"expects shape \(11, 20\), got \(8, 20\)"):
        cell = rnn_cell.BasicLSTMCell(5)
        cell.build((None, 6))
        cell.load_checkpoint(path, scope="bidirectional_rnn/fw")


@pytest.mark.parametrize("fixture, cell, unread", [
    ("tf1_float64", lambda: rnn_cell.LSTMCell(6), "w_f_diag"),
    ("tf1_lstm_peep_proj", lambda: rnn_cell.LSTMCell(7, num_proj=4), "w_f_diag"),
    ("tf1_lstm_peep_proj", lambda: rnn_cell.LSTMCell(7, use_peepholes=True), "projection/kernel"),
])
def test_peepholes_or_projection_the_cell_would_not_read_are_refused(fixture, cell, unread):
    # the kernel and bias fit (or, with a projection, build another input
    # depth): without the check the cell ran without the checkpoint's peepholes
    with pytest.raises(ValueError, match=f"holds .*'rnn/lstm_cell/{unread}'.* does not read.*"
                                         "use_peepholes=True.*num_proj"):
        cell().load_checkpoint(os.path.join(TF, fixture))


def test_unbuilt_user_cell_is_asked_to_build():
    class Mine(rnn_cell.RNNCell):
        state_size = output_size = 3

    with pytest.raises(ValueError, match="build the cell"):
        Mine().load_checkpoint(os.path.join(TF, "tf1_gru"))


# ------------------------------------------------------------------ the checkpoint's dtype


def test_float64_checkpoint_gives_a_float64_cell():
    cell = rnn_cell.LSTMCell(6, use_peepholes=True)
    cell.load_checkpoint(os.path.join(TF, "tf1_float64"))
    assert cell.dtype == np.float64
    stored = read_tf_checkpoint(os.path.join(TF, "tf1_float64"))
    for name, w in zip(cell.variable_names, cell.get_weights()):
        assert w.dtype == np.float64
        np.testing.assert_array_equal(w, stored["rnn/" + name])


def test_set_weights_keeps_float64_unless_the_dtype_was_fixed(rng):
    weights = [rng.uniform(-0.6, 0.6, (7, 16)), rng.uniform(-0.6, 0.6, 16)]
    free = rnn_cell.BasicLSTMCell(4)
    free.build((None, 3))
    assert free.dtype == np.float32
    free.set_weights(weights)
    assert free.dtype == np.float64 and np.array_equal(free.get_weights()[0], weights[0])
    free.set_weights([w.astype(np.float32) for w in weights])
    assert free.dtype == np.float32
    fixed = rnn_cell.BasicLSTMCell(4, dtype=np.float32)
    fixed.set_weights(weights)  # documented: a fixed float32 cell rounds
    assert fixed.dtype == np.float32
    assert np.array_equal(fixed.get_weights()[0], weights[0].astype(np.float32))
    # a rejected list changes neither the weights nor the dtype
    before = free.get_weights()
    with pytest.raises(ValueError, match="expects shape"):
        free.set_weights([weights[0], weights[1][:8]])
    assert free.dtype == np.float32
    assert all(np.array_equal(a, b) for a, b in zip(before, free.get_weights()))


# ------------------------------------------------------------------ Keras 2 files


def test_saved_model_without_keras_metadata(tmp_path):
    d = _copy(tmp_path, "keras2_gru_functional")
    (d / "keras_metadata.pb").unlink()
    with pytest.raises(ValueError, match="without keras_metadata.pb.*tf.saved_model.save"):
        fastrnn.load_keras(d)


def test_weights_checkpoint_needs_its_config():
    path = os.path.join(TF, "keras2_save_weights", "ckpt")
    with pytest.raises(ValueError, match="holds weights only; pass config="):
        fastrnn.load_keras(path)
    other = os.path.join(TF, "keras2_bidirectional_masking")
    with pytest.raises(ValueError, match="tracks 3 layers.*config has 4"):
        fastrnn.load_keras(other, config=os.path.join(TF, "keras2_save_weights", "model.json"))


def test_tf1_checkpoint_is_not_a_keras_model():
    with pytest.raises(ValueError, match="name-based checkpoint.*load_checkpoint"):
        fastrnn.load_keras(os.path.join(TF, "tf1_gru", "model.ckpt"),
                           config=os.path.join(TF, "keras2_save_weights", "model.json"))


def test_saved_model_converts_to_the_native_format(tmp_path):
    _, arrays = _expected("keras2_bidirectional_masking")
    model = fastrnn.load_keras(os.path.join(TF, "keras2_bidirectional_masking"))
    fastrnn.save(model, tmp_path / "m.fastrnn")
    restored = fastrnn.load(tmp_path / "m.fastrnn")
    np.testing.assert_allclose(restored.predict(arrays["x"]), arrays["y0"], rtol=0, atol=1e-5)


def test_cli_predicts_with_a_saved_model(tmp_path, capsys):
    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    import zarr
    from fastrnn.cli.predict import main as predict_main

    _, arrays = _expected("keras2_gru_functional")
    np.save(tmp_path / "x.npy", arrays["x"])
    out = str(tmp_path / "y.zarr")
    model = os.path.join(TF, "keras2_gru_functional")
    assert predict_main([model, str(tmp_path / "x.npy"), out, "--no-progress"]) == 0
    np.testing.assert_allclose(zarr.open(out)[:], arrays["y0"], rtol=0, atol=1e-5)
    index = os.path.join(TF, "keras2_save_weights", "ckpt.index")
    assert predict_main([index, str(tmp_path / "x.npy"), str(tmp_path / "z.zarr")]) == 2
    assert "a TensorFlow checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------ hostile indexes
# Indexes written here, byte by byte, in leveldb's table format: one data
# block (every key a restart point), the index block, an empty metaindex, the
# footer; each block followed by its type byte and masked CRC-32C.


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, value):
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(items):
    body, restarts = b"", []
    for key, value in items:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    body += b"".join(r.to_bytes(4, "little") for r in restarts)
    return body + len(restarts).to_bytes(4, "little")


def _write_index(path, entries, num_shards=1, handles=None):
    items = [(b"", _field(1, num_shards) + _field(3, _field(1, 1)))] + sorted(entries.items())
    _write_table(path, _block(items), items[-1][0], handles)


def _write_table(path, data_block, last_key=b"", handles=None):
    """A table of one data block; ``handles(offset, size)``, when given, lists
    the ``(offset, size)`` of each data block the index block points at."""
    out = bytearray()

    def put(block):
        handle = (len(out), len(block))
        out.extend(block + b"\x00" + _tf_bundle.masked_crc32c(block + b"\x00").to_bytes(4, "little"))
        return handle

    def encode(handle):
        return _varint(handle[0]) + _varint(handle[1])

    data = put(data_block)
    meta = put(_block([]))
    listed = [data] if handles is None else handles(*data)
    index = put(_block([(last_key + b"\xff" * (i + 1), encode(h)) for i, h in enumerate(listed)]))
    footer = (encode(meta) + encode(index)).ljust(40, b"\x00")
    path.write_bytes(bytes(out) + footer + (0xDB4775248B80FB57).to_bytes(8, "little"))


def _entry(shape, size, offset=0, dtype=1, slices=()):
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    msg = _field(1, dtype) + _field(2, dims) + _field(4, offset) + _field(5, size)
    for extents in slices:
        msg += _field(7, b"".join(_field(1, _field(1, s) + _field(2, n)) for s, n in extents))
    return msg


def test_written_index_reads(tmp_path):
    value = np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5
    (tmp_path / "m.data-00000-of-00001").write_bytes(value.tobytes())
    _write_index(tmp_path / "m.index", {b"w": _entry((2, 3), 24)})
    np.testing.assert_array_equal(read_tf_checkpoint(tmp_path / "m")["w"], value)


@pytest.mark.parametrize("entry, message", [
    (_entry((1 << 38,), 1 << 40), "1099511627776 bytes at offset 0 run past the end"),
    (_entry((1 << 30, 1 << 30), 16), "needs 4611686018427387904 bytes, the entry declares 16"),
    (_entry((1 << 31, 1 << 31), 0, slices=[[(0, 1), (0, 1)]]), "not in"),
    (_entry((2, 2), 16, dtype=21), "dtype variant is not supported"),
    (_field(1, 1) + _field(4, b"xx") + _field(5, 4), "field 4 holds 2 bytes where a number"),
], ids=["size-past-the-shard", "shape-against-size", "slice-not-stored", "variant",
        "offset-as-bytes"])
def test_declared_sizes_are_checked_before_reading(tmp_path, entry, message):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 64)
    _write_index(tmp_path / "m.index", {b"w": entry})
    with pytest.raises(ValueError, match=message):
        read_tf_checkpoint(tmp_path / "m")


def test_partitioned_shape_larger_than_its_slices(tmp_path):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 64)
    extents = [(0, 1), (0, 1)]
    key = _tf_bundle._slice_key(b"w", extents)
    _write_index(tmp_path / "m.index", {b"w": _entry((1 << 31, 1 << 31), 0, slices=[extents]),
                                        key: _entry((1, 1), 4)})
    with pytest.raises(ValueError, match="its slices hold 1 of its 4611686018427387904"):
        read_tf_checkpoint(tmp_path / "m")


def test_entry_overrunning_its_block(tmp_path):
    block = _block([(b"", b"x")])
    bad = block[:1] + _varint(200) + block[2:]  # key length past the block's end
    out = bad + b"\x00" + _tf_bundle.masked_crc32c(bad + b"\x00").to_bytes(4, "little")
    index = _block([(b"\xff", _varint(0) + _varint(len(bad)))])
    start = len(out)
    out += index + b"\x00" + _tf_bundle.masked_crc32c(index + b"\x00").to_bytes(4, "little")
    footer = (_varint(0) + _varint(0) + _varint(start) + _varint(len(index))).ljust(40, b"\x00")
    (tmp_path / "m.index").write_bytes(out + footer + (0xDB4775248B80FB57).to_bytes(8, "little"))
    with pytest.raises(ValueError, match="data block: an entry runs past the block's end"):
        read_tf_checkpoint(tmp_path / "m")


# ------------------------------------------------------------------ bytes paid for once
# TensorFlow gives every tensor (and every slice of a partitioned variable)
# its own bytes of a shard and lists each data block of the index once. A
# file that points many entries at the same bytes, or lists one block many
# times, would be read once per entry: these are refused before anything is
# read, so memory stays in proportion to the files.

def _no_data_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor's bytes were read before the index was refused")
    monkeypatch.setattr(_tf_bundle.BundleReader, "_bytes", refuse)


def _peak(call):
    """The ValueError ``call`` raises and the peak memory it traced."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            call()
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_entries_sharing_bytes_are_refused_before_reading(tmp_path, monkeypatch):
    n = 1 << 18  # a 1 MiB shard that 300 entries claim whole
    (tmp_path / "m.data-00000-of-00001").write_bytes(np.ones(n, np.float32).tobytes())
    _write_index(tmp_path / "m.index", {b"w%05d" % i: _entry((n,), 4 * n) for i in range(300)})
    _no_data_reads(monkeypatch)
    error, peak = _peak(lambda: read_tf_checkpoint(tmp_path / "m"))
    assert str(error) == (
        f"{tmp_path / 'm'}.index: entry 'w00000' and entry 'w00001' share 1048576 bytes at "
        f"offset 0 of shard 0 ({tmp_path / 'm'}.data-00000-of-00001): a checkpoint written "
        "by TensorFlow gives each tensor its own bytes")
    assert peak < 4 * n  # less than the one tensor the entries claim
    with pytest.raises(ValueError, match="share 1048576 bytes"):  # every reader opens it so
        rnn_cell.LSTMCell(4).load_checkpoint(tmp_path / "m", scope="")


def test_entries_overlapping_in_part_are_refused(tmp_path, monkeypatch):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 64)
    _write_index(tmp_path / "m.index", {b"a": _entry((4,), 16, offset=8),
                                        b"b": _entry((4,), 16, offset=20),
                                        b"c": _entry((1,), 4, offset=48)})
    _no_data_reads(monkeypatch)
    with pytest.raises(ValueError, match=r"entry 'a' and entry 'b' share 4 bytes at offset 20 "
                                         r"of shard 0 \(.*m\.data-00000-of-00001\)"):
        read_tf_checkpoint(tmp_path / "m")


def test_adjacent_empty_and_other_shard_entries_read(tmp_path):
    # touching extents, empty tensors at a used offset, and the same offsets
    # in another shard are what TensorFlow writes: all read
    a, b = np.arange(4, dtype=np.float32), np.arange(4, 8, dtype=np.float32)
    (tmp_path / "m.data-00000-of-00002").write_bytes(a.tobytes() + b.tobytes())
    (tmp_path / "m.data-00001-of-00002").write_bytes(b.tobytes())
    shard1 = _entry((4,), 16) + _field(3, 1)
    _write_index(tmp_path / "m.index", {b"a": _entry((4,), 16), b"b": _entry((4,), 16, offset=16),
                                        b"e": _entry((0,), 0, offset=8), b"s": shard1},
                 num_shards=2)
    out = read_tf_checkpoint(tmp_path / "m")
    for name, want in [("a", a), ("b", b), ("e", np.zeros(0, np.float32)), ("s", b)]:
        np.testing.assert_array_equal(out[name], want)


def test_slices_sharing_bytes_are_refused_before_reading(tmp_path, monkeypatch):
    k, n = 100, 1 << 18  # 100 slices of one 1 MiB row, all on the same bytes
    (tmp_path / "m.data-00000-of-00001").write_bytes(np.ones(n, np.float32).tobytes())
    slices = [[(i, 1), (0, n)] for i in range(k)]
    entries = {b"w": _entry((k, n), 0, slices=slices)}
    entries.update({_tf_bundle._slice_key(b"w", s): _entry((1, n), 4 * n) for s in slices})
    _write_index(tmp_path / "m.index", entries)
    _no_data_reads(monkeypatch)
    error, peak = _peak(lambda: read_tf_checkpoint(tmp_path / "m"))
    assert re.search(r"\.index: slice \[\(0, 1\), \(0, 262144\)\] of 'w' and slice "
                     r"\[\(1, 1\), \(0, 262144\)\] of 'w' share 1048576 bytes at offset 0 of "
                     r"shard 0 .*: a checkpoint written by TensorFlow gives each tensor its own "
                     r"bytes$", str(error)), str(error)
    assert peak < 4 * n


def test_a_slice_listed_twice_is_refused(tmp_path):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 16)
    extents = [(0, 1), (0, 4)]
    _write_index(tmp_path / "m.index", {
        b"w": _entry((64, 4), 0, slices=[extents] * 64),
        _tf_bundle._slice_key(b"w", extents): _entry((1, 4), 16)})
    with pytest.raises(ValueError, match=r"tensor 'w': it lists the slice \[\(0, 1\), \(0, 4\)\] "
                                         "more than once"):
        read_tf_checkpoint(tmp_path / "m")


def test_slices_must_pay_for_their_elements(tmp_path):
    # slices declaring no bytes cannot count toward the elements of the whole
    # tensor: refused before the 16 MiB tensor they claim is allocated
    k, n = 4096, 1024
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 4 * n)
    slices = [[(i, 1), (0, n)] for i in range(k)]
    entries = {b"w": _entry((k, n), 0, slices=slices)}
    entries.update({_tf_bundle._slice_key(b"w", s): _entry((1, n), 4 * n if s[0][0] == 0 else 0)
                    for s in slices})
    _write_index(tmp_path / "m.index", entries)
    error, peak = _peak(lambda: read_tf_checkpoint(tmp_path / "m"))
    assert re.search(r"tensor 'w' slice \[\(1, 1\), \(0, 1024\)\]: shape \(1, 1024\) of "
                     "float32 needs 4096 bytes, the entry declares 0$", str(error)), str(error)
    assert peak < k * n  # a quarter of the whole tensor


def test_an_index_listing_a_data_block_twice_is_refused(tmp_path):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 4)
    entries = {b"w%06d" % i: _entry((1,), 4) for i in range(2000)}
    _write_index(tmp_path / "m.index", entries, handles=lambda offset, size: [(offset, size)] * 400)
    size = len(_block([(b"", _field(1, 1) + _field(3, _field(1, 1)))] + sorted(entries.items())))
    error, peak = _peak(lambda: read_tf_checkpoint(tmp_path / "m"))
    assert str(error) == (
        f"{tmp_path / 'm'}.index: the index block lists the data block at offset 0 ({size} "
        "bytes) more than once: a table written by TensorFlow stores each data block once, "
        "apart from the others")
    assert peak < 4 * os.path.getsize(tmp_path / "m.index")


def test_an_index_listing_overlapping_data_blocks_is_refused(tmp_path):
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 4)
    _write_index(tmp_path / "m.index", {b"w": _entry((1,), 4)},
                 handles=lambda offset, size: [(offset, size), (offset + 1, size - 8)])
    with pytest.raises(ValueError, match=r"index block lists data blocks at offset 0 \(\d+ "
                                         r"bytes\) and at offset 1 \(\d+ bytes\), which overlap"):
        read_tf_checkpoint(tmp_path / "m")


def test_keys_growing_one_byte_at_a_time_are_refused(tmp_path):
    # each key shares all of the one before and adds a byte: 4 bytes of block
    # per key, keys of 1, 2, ... 20000 bytes (200 MB) restored if unchecked
    m = 20000
    body = _varint(0) + _varint(0) + _varint(0)  # the key ""
    body += b"".join(_varint(i) + _varint(1) + _varint(0) + b"a" for i in range(m))
    block = body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart
    _write_table(tmp_path / "m.index", block)
    error, peak = _peak(lambda: read_tf_checkpoint(tmp_path / "m"))
    assert str(error) == (
        f"{tmp_path / 'm'}.index: data block: its keys, restored from their shared prefixes, "
        f"take more than 16 times the block's {len(block)} bytes; a table written by "
        "TensorFlow stores a whole key every 16 keys, which keeps them within that")
    assert peak < 40 * len(block)


def test_two_weights_pointing_at_one_checkpoint_value_are_refused():
    """A SavedModel's object graph maps each weight to a checkpoint key; a
    graph pointing two weights at one value (Keras never writes one) would
    have its bytes read once per weight. The real file's graph is edited
    in memory: the second layer's kernel names the first layer's value."""
    from fastrnn.interop.tf_saved_model import _ObjectGraph

    prefix = os.path.join(DATA, "tf", "keras2_gru_functional", "variables", "variables")
    graph = _ObjectGraph(_tf_bundle.BundleReader(prefix))
    a, b = "layer_with_weights-0/cell/kernel", "layer_with_weights-1/cell/kernel"
    assert graph.variable(a).shape != () and graph.variable(b).shape != ()
    graph = _ObjectGraph(_tf_bundle.BundleReader(prefix))
    graph.variables[graph.find(b)] = graph.variables[graph.find(a)]
    graph.variable(a)
    with pytest.raises(ValueError, match=f"{a} and {b} are one checkpoint value"):
        graph.variable(b)


_DIMS = _field(2, _field(1, 2))  # shape (2,)


@pytest.mark.parametrize("entry, header, message", [
    (_entry((2,), 8), _field(1, b"\x01") + _field(3, _field(1, 1)),
     r"header: field 1 holds 1 bytes where a number"),
    (_entry((2,), 8), _field(1, 1) + _field(3, 5), r"header: field 3 holds the number 5 where a "
                                                   "message"),
    (_field(1, 1) + _field(2, 7) + _field(5, 8), None,
     r"entry 'w': field 2 holds the number 7 where a message"),
    (_field(1, 1) + _field(2, _field(2, _field(1, b"ab"))) + _field(5, 8), None,
     r"entry 'w' shape: field 1 holds 2 bytes where a number"),
    (_entry((2,), 8) + _field(7, 3), None, r"entry 'w': field 7 holds the number 3"),
    (_field(1, b"\x01") + _field(2, _DIMS) + _field(5, 8), None,
     r"entry 'w': field 1 holds 1 bytes where a number"),
    (_entry((2,), 8) + _field(6, b"abcd"), None, r"entry 'w': field 6 holds 4 bytes"),
], ids=["num_shards-as-bytes", "version-as-number", "shape-as-number", "dim-as-bytes",
        "slice-as-number", "dtype-as-bytes", "crc-as-bytes"])
def test_fields_of_the_wrong_wire_type_are_value_errors(tmp_path, entry, header, message):
    """Each field is read as the type it must have; a TypeError escaped before."""
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 8)
    items = [(b"", header or _field(1, 1) + _field(3, _field(1, 1))), (b"w", entry)]
    _write_table(tmp_path / "m.index", _block(items), b"w")
    with pytest.raises(ValueError, match=message):
        read_tf_checkpoint(tmp_path / "m")["w"]


def test_a_slice_of_another_dtype_is_refused(tmp_path):
    """The second slice was cast into the first one's dtype: a float64 slice
    of a float32 variable came back truncated to uint8."""
    (tmp_path / "m.data-00000-of-00001").write_bytes(np.array([1.5, 2.5]).tobytes()
                                                     + bytes([7, 9]))
    a, b = [(0, 2)], [(2, 2)]
    _write_index(tmp_path / "m.index", {
        b"w": _entry((4,), 0, slices=[a, b]),
        _tf_bundle._slice_key(b"w", a): _entry((2,), 2, offset=16, dtype=4),  # uint8
        _tf_bundle._slice_key(b"w", b): _entry((2,), 16, dtype=2)})  # float64
    with pytest.raises(ValueError, match=r"tensor 'w': slice \[\(0, 2\)\] holds uint8, the "
                                         "variable is float32"):
        read_tf_checkpoint(tmp_path / "m")


def test_object_graph_fields_of_the_wrong_wire_type(tmp_path):
    """A child reference's name stored as a number raised AttributeError."""
    graph = _field(1, _field(1, _field(1, 1) + _field(2, 5))) + _field(1, b"")
    blob = _varint(len(graph)) + b"\x00" * 4 + graph
    (tmp_path / "k.data-00000-of-00001").write_bytes(blob)
    _write_index(tmp_path / "k.index", {
        b"_CHECKPOINTABLE_OBJECT_GRAPH": _field(1, 7) + _field(2, b"") + _field(5, len(blob))})
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "SimpleRNN", "config": {"name": "r", "units": 2}}]}}
    with pytest.raises(ValueError, match="object graph: field 2 holds the number 5 where a "
                                         "message or string"):
        fastrnn.load_keras(tmp_path / "k", config=config)


def test_keras_metadata_fields_of_the_wrong_wire_type(tmp_path):
    d = _copy(tmp_path, "keras2_gru_functional")
    (d / "keras_metadata.pb").write_bytes(_field(1, 5))
    with pytest.raises(ValueError, match=r"keras_metadata.pb: field 1 holds the number 5"):
        fastrnn.load_keras(d)


@pytest.mark.parametrize("escape", ["\\x4", "\\u1234"])
def test_checkpoint_file_with_an_invalid_escape(tmp_path, escape):
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "model{escape}"\n')
    with pytest.raises(ValueError, match=r"checkpoint: model_checkpoint_path holds an invalid "
                                         "escape"):
        read_tf_checkpoint(tmp_path)


def test_cudnn_layers_from_a_checkpoint_and_a_legacy_h5(tmp_path):
    """Keras 2's CuDNNLSTM / CuDNNGRU (the SavedModel form runs in
    test_reproduces_tensorflow): the save_weights checkpoint and .h5 with
    the JSON, and the legacy .h5, give tf_keras's numbers; the model they
    load as (LSTM and GRU layers) saves and loads in the native format."""
    _, arrays = _expected("keras2_cudnn")
    path = os.path.join(TF, "keras2_cudnn")
    models = [fastrnn.load_keras(os.path.join(path, "ckpt"),
                                 config=os.path.join(path, "model.json"))]
    pytest.importorskip("h5py")
    models.append(fastrnn.load_keras(os.path.join(path, "model.h5")))
    models.append(fastrnn.load_keras(os.path.join(path, "weights.h5"),
                                     config=os.path.join(path, "model.json")))
    for model in models:
        assert [type(layer).__name__ for layer in model.layers] == \
            ["InputLayer", "Bidirectional", "GRU"]
        assert model.layers[2].get_config()["reset_after"] is True
        np.testing.assert_allclose(model.predict(arrays["x"]), arrays["y0"], rtol=0, atol=1e-5)
    fastrnn.save(models[0], tmp_path / "m.fastrnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.fastrnn").predict(arrays["x"]),
                                  models[0].predict(arrays["x"]))


def test_a_cudnn_bias_of_another_shape_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    shutil.copy(os.path.join(TF, "keras2_cudnn", "model.h5"), path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/cu_dnngru"]
        name = [n.decode() if isinstance(n, bytes) else n
                for n in group.attrs["weight_names"]][2]
        del group[name]
        group.create_dataset(name, data=np.zeros(12, np.float32))  # (a GRU's 3H, not 6H)
    with pytest.raises(ValueError, match=r"has shape \(12,\); layer 'cu_dnngru' \(CuDNNGRU\) "
                                         r"takes \[\(D, 12\), \(4, 12\), \(24,\)\]"):
        fastrnn.load_keras(str(path))


def _cudnn_config():
    return json.load(open(os.path.join(TF, "keras2_cudnn", "model.json")))


def test_cudnn_weights_from_a_checkpoint_are_checked_before_conversion():
    """The TF-checkpoint and SavedModel routes hand arrays over: a cuDNN
    bias of the right size in another shape was reshaped and accepted."""
    from fastrnn.interop import keras_file

    weights = fastrnn.load_keras(os.path.join(TF, "keras2_cudnn", "model.h5")).get_weights()
    arrays = {"bidirectional": None, "cu_dnngru": [weights[6], weights[7],
                                                   np.zeros((2, 12), np.float32)]}

    def weights_of(entry, _group, _layer):
        name = entry["config"]["name"]
        return arrays[name] if arrays.get(name) is not None else \
            [np.zeros((3, 20), np.float32), np.zeros((5, 20), np.float32),
             np.zeros(40, np.float32)] * 2

    with pytest.raises(ValueError, match=r"weight 2 \(Keras order\) has shape \(2, 12\); layer "
                                         r"'cu_dnngru' \(CuDNNGRU\) takes "
                                         r"\[\(D, 12\), \(4, 12\), \(24,\)\]"):
        keras_file.build_model(_cudnn_config(), weights_of)


@pytest.mark.parametrize("key,value", [("activation", "relu"),
                                       ("recurrent_activation", "hard_sigmoid"),
                                       ("use_bias", False), ("reset_after", False)])
def test_a_cudnn_layer_with_settings_it_cannot_have_is_refused(key, value):
    config = _cudnn_config()
    config["config"]["layers"][2]["config"][key] = value  # the CuDNNGRU
    with pytest.raises(ValueError, match=rf"CuDNNGRU 'cu_dnngru': {key}=.*; a cuDNN layer "
                                         "computes with"):
        fastrnn.load_keras(os.path.join(TF, "keras2_cudnn", "ckpt"), config=config)


def test_keras2_weights_h5_external_links_and_a_layer_named_layers(tmp_path):
    """Keras 2's save_weights .h5: a dataset linked to another file is
    refused before the link is followed (a link to a FIFO hung the load); a
    layer named 'layers' is still Keras 2's layout (its root attribute
    layer_names says so)."""
    h5py = pytest.importorskip("h5py")
    src = os.path.join(TF, "keras2_cudnn")
    path = tmp_path / "w.h5"
    shutil.copy(os.path.join(src, "weights.h5"), path)
    with h5py.File(path, "r+") as f:
        group = f["cu_dnngru"]
        name = [n.decode() if isinstance(n, bytes) else n
                for n in group.attrs["weight_names"]][2]
        del group[name]
        group[name] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/bias")
    with pytest.raises(ValueError, match=r"dataset /cu_dnngru/.*bias:0 is an external link"):
        fastrnn.load_keras(str(path), config=os.path.join(src, "model.json"))
    renamed = tmp_path / "layers.h5"
    shutil.copy(os.path.join(src, "weights.h5"), renamed)
    config = _cudnn_config()
    config["config"]["layers"][2]["config"]["name"] = "layers"
    with h5py.File(renamed, "r+") as f:
        f.move("cu_dnngru", "layers")
        f.attrs["layer_names"] = [b"bidirectional", b"layers"]
    _, arrays = _expected("keras2_cudnn")
    model = fastrnn.load_keras(str(renamed), config=config)
    np.testing.assert_allclose(model.predict(arrays["x"]), arrays["y0"], rtol=0, atol=1e-5)


def _renamed_cudnn_config(suffix="_1"):
    """The keras2_cudnn model's config with other layer names (as a second
    build of the model in one Keras session names its layers)."""
    config = _cudnn_config()
    for entry in config["config"]["layers"][1:]:
        entry["config"]["name"] += suffix
    return config


@pytest.mark.parametrize("name", ["weights.h5", "model.h5"])
def test_keras2_h5_weights_under_other_layer_names_go_in_order(name):
    """Keras 2's load_weights matches an .h5 file's layers with the model's
    in order: a config whose names are not the file's (a model built again
    in the session, ``lstm_1`` for ``lstm``) loads as it does; other
    counts of layers holding weights are refused."""
    pytest.importorskip("h5py")
    _, arrays = _expected("keras2_cudnn")
    path = os.path.join(TF, "keras2_cudnn", name)
    model = fastrnn.load_keras(path, config=_renamed_cudnn_config())
    assert [layer.name for layer in model.layers[1:]] == ["bidirectional_1", "cu_dnngru_1"]
    np.testing.assert_allclose(model.predict(arrays["x"]), arrays["y0"], rtol=0, atol=1e-5)
    fewer = _renamed_cudnn_config()
    del fewer["config"]["layers"][2]  # the GRU
    with pytest.raises(ValueError, match=r"matched in order, as Keras 2's load_weights does, "
                                         r"and the config's layers that take weights are 1, "
                                         r"the file's 2"):
        fastrnn.load_keras(path, config=fewer)


def test_a_variable_of_another_shape_names_the_checkpoints_variables():
    """A stack whose second layer is a GRUCell(4) where the checkpoint's is a
    GRUCell(5): the error names the checkpoint, the scope and each variable
    with its shape (the cell's own message alone named no variable of the
    file, and two layers of one class read alike)."""
    cell = rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(6), rnn_cell.GRUCell(4)])
    with pytest.raises(ValueError, match=r"load_checkpoint: .*tf1_multi.model\.ckpt: the "
                                         r"variables under scope 'rnn' do not fit .*GRUCell "
                                         r".*rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel "
                                         r"\(11, 10\)"):
        cell.load_checkpoint(os.path.join(TF, "tf1_multi", "model.ckpt"))


def test_a_checkpoint_of_other_shapes_than_its_config_names_the_layer(tmp_path):
    """The config says 4 units where the checkpoint's GRU has 5: the error
    names the layer of the config (a cell's set_weights said which shapes,
    not which layer)."""
    config = json.load(open(os.path.join(TF, "keras2_save_weights", "model.json")))
    config["config"]["layers"][1]["config"]["units"] = 4
    with pytest.raises(ValueError, match=r"layer 'gru_3' \(GRU\): GRUCell.set_weights: "
                                         r"kernel expected shape \(D, 12\), got \(3, 15\)"):
        fastrnn.load_keras(os.path.join(TF, "keras2_save_weights", "ckpt"), config=config)

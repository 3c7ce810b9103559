"""Hostile files: every loader refuses, with a ValueError naming the problem, at bounded memory.

Each hostile file is built here, small on disk, and loaded in a child process
whose address space is capped ``CAP`` above what it uses after importing
fastrnn, NumPy and h5py and loading an ordinary file of the same kind. The
child must get a ValueError matching the case's pattern, and then load the
ordinary file again under the cap. Before the loaders checked declared sizes
against the config and the file's own size, each of these files made its
loader allocate past the cap (a raw MemoryError, or a ValueError wrapping
one), build random weights of the declared size, or recurse until a raw
RecursionError.

Below them: a read-only ``out=`` on a stream, and the checks that need no cap
(external HDF5 storage, unbuilt layers, declared sizes that do match).
"""

import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn.streaming import load_stream

h5py = pytest.importorskip("h5py")

CAP = 3 << 29  # 1.5 GiB: every hostile file below asks for more
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent(r"""
    import re, resource, sys
    import numpy, h5py
    import fastrnn, fastrnn.streaming

    kind, hostile, ordinary, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    loader = {"load": fastrnn.load, "load_stream": fastrnn.streaming.load_stream,
              "load_keras": fastrnn.load_keras}[kind]
    loader(ordinary)  # whatever a load imports is imported before the cap is measured
    with open("/proc/self/status") as f:
        vm = int(re.search(r"VmSize:\s+(\d+) kB", f.read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + cap, vm + cap))
    try:
        loader(hostile)
    except ValueError as exc:
        print("ValueError:", exc)
    except BaseException as exc:
        print("RAISED", type(exc).__name__, str(exc)[:500])
        sys.exit(3)
    else:
        print("LOADED")
        sys.exit(4)
    loader(ordinary)
    print("ORDINARY FILE LOADED UNDER THE CAP")
""")


def _refused(kind, hostile, ordinary, pattern):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-c", _CHILD, kind, str(hostile), str(ordinary),
                           str(CAP)], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(pattern, proc.stdout), out
    assert "ORDINARY FILE LOADED UNDER THE CAP" in proc.stdout, out
    return proc.stdout


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="RLIMIT_AS and /proc/self/status")


# ----------------------------------------------------------------- builders


def _deflate_bomb(prefix, zero_mib):
    """A raw deflate stream of ``prefix`` then ``zero_mib`` MiB of zeros (~1 KiB per MiB):
    one fully flushed block of zeros repeated (it refers to nothing before it)."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    return head + block * zero_mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def _zip(path, members):
    """Write a zip of ``(name, data)`` (stored) and ``(name, deflated data, declared size)``
    members by hand, zip64 where a size needs it; a bomb's CRC is left 0: the loader must
    refuse it before reading it."""
    out, central = bytearray(), bytearray()
    for name, data, *declared in members:
        method = zipfile.ZIP_DEFLATED if declared else zipfile.ZIP_STORED
        size = declared[0] if declared else len(data)
        n, offset = name.encode(), len(out)
        crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else 0
        big = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if big else b""
        usize, csize = (0xFFFFFFFF, 0xFFFFFFFF) if big else (size, len(data))
        version = 45 if big else 20
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, method, 0, 0x21, crc,
                           csize, usize, len(n), len(extra)) + n + extra + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", version, version, 0, method, 0,
                               0x21, crc, csize, usize, len(n), len(extra), 0, 0, 0, 0,
                               offset) + n + extra
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                 len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _npz(members):
    """An .npz from ``{name: ndarray or raw .npy bytes}`` (stored, as numpy.savez writes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, a in members.items():
            if isinstance(a, np.ndarray):
                one = io.BytesIO()
                np.save(one, a, allow_pickle=False)
                a = one.getvalue()
            z.writestr(name + ".npy", a)
    return buf.getvalue()


def _fastrnn_file(path, obj, blob):
    """A fastrnn file whose checksums hold, as a crafted one would."""
    header = {"format": "fastrnn", "format_version": 1, "fastrnn_version": "0.1.0",
              "object": obj, "arrays_sha256": hashlib.sha256(blob).hexdigest(),
              "object_sha256": hashlib.sha256(json.dumps(
                  obj, sort_keys=True, allow_nan=True).encode()).hexdigest()}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fastrnn.json", json.dumps(header))
        z.writestr("arrays.npz", blob)
    return path


def _lstm(units=16, D=3, seed=0):
    layer = fastrnn.LSTM(units)
    layer.build((1, None, D))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Ordinary files of each kind, and the parts hostile ones are made of."""
    d = tmp_path_factory.mktemp("hostile")
    layer = _lstm()
    fastrnn.save(layer, d / "lstm.fastrnn")
    with zipfile.ZipFile(d / "lstm.fastrnn") as z:
        header, blob = json.loads(z.read("fastrnn.json")), z.read("arrays.npz")
    stream = _lstm(8).stream()
    stream(np.ones((1, 3), np.float32))
    stream_path = stream.save(d / "stream.npz")
    with np.load(stream_path, allow_pickle=False) as data:
        entries = {k: data[k] for k in data.files}
    keras_path = _keras_file(d / "lstm.keras", _sequential([_lstm_entry(4)]),
                             {"layers/lstm/cell/vars": [(3, 16), (4, 16), (16,)]})
    return {"dir": d, "spec": header["object"], "blob": blob,
            "load": d / "lstm.fastrnn", "load_stream": stream_path, "entries": entries,
            "load_keras": keras_path}


def _sequential(layers, batch_shape=(None, 5, 3)):
    return {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": list(batch_shape),
                                                "dtype": "float32", "name": "in"}},
        *layers]}}


def _lstm_entry(units, **config):
    return {"class_name": "LSTM", "config": {"name": "lstm", "units": units, **config}}


def _h5(datasets, attrs=None):
    """HDF5 bytes holding ``{group: [shape, ...]}`` as datasets 0, 1, ... (a shape of
    random data, or ``("empty", shape)``: declared, never written, so no storage)."""
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    with h5py.File(buf, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for group, shapes in datasets.items():
            g = f.require_group(group)
            for i, shape in enumerate(shapes):
                if shape[0] == "empty":
                    g.create_dataset(str(i), shape=shape[1], dtype="f4")
                else:
                    g[str(i)] = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return buf.getvalue()


def _keras_file(path, model, datasets, weights=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", model if isinstance(model, str) else json.dumps(model))
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", _h5(datasets) if weights is None else weights)
    return path


def _legacy_h5(path, model, layer_name, shapes):
    names = [f"{layer_name}/v{i}" for i in range(len(shapes))]
    data = _h5({f"model_weights/{layer_name}/{layer_name}": shapes},
               attrs={"model_config": json.dumps(model)})
    path.write_bytes(data)
    with h5py.File(path, "a") as f:
        g = f[f"model_weights/{layer_name}"]
        for i, n in enumerate(names):
            g.move(f"{layer_name}/{i}", n)
        g.attrs["weight_names"] = [n.encode() for n in names]
    return path


# ----------------------------------------------------------------- fastrnn.load


def test_fastrnn_arrays_member_inflating_to_2_gib(files):
    bad = _zip(files["dir"] / "bomb2g.fastrnn", [
        ("fastrnn.json", json.dumps({"format": "fastrnn", "format_version": 1,
                                     "object": files["spec"]}).encode()),
        ("arrays.npz", _deflate_bomb(b"", 2048), 2048 << 20)])
    assert os.path.getsize(bad) < 3 << 20
    _refused("load", bad, files["load"],
             r"fastrnn.load: .*member 'arrays.npz' declares 2147483648 bytes \(2.0 GiB\) "
             r"uncompressed")


def test_fastrnn_zip64_member_inflating_to_16_gib(files):
    bad = _zip(files["dir"] / "bomb16g.fastrnn", [
        ("fastrnn.json", json.dumps({"format": "fastrnn", "format_version": 1,
                                     "object": files["spec"]}).encode()),
        ("arrays.npz", _deflate_bomb(b"", 16384), 16384 << 20)])
    assert os.path.getsize(bad) < 20 << 20
    _refused("load", bad, files["load"], r"member 'arrays.npz' declares 17179869184 bytes")


def test_fastrnn_npy_declaring_2_gib(files):
    arrays = {f"a{i}": np.load(io.BytesIO(files["blob"]))[f"a{i}"] for i in range(3)}
    arrays["a0"] = _npy_header((1 << 29,)) + bytes(16)
    bad = _fastrnn_file(files["dir"] / "npy2g.fastrnn", files["spec"], _npz(arrays))
    _refused("load", bad, files["load"],
             r"arrays.npz: array 'a0' declares shape \(536870912,\) of float32 \(2.0 GiB\) "
             r"but its member holds 16 bytes of data")


@pytest.mark.parametrize("key, value, argument", [
    ("input_dim", 10**8, "input_dim"),
    ("input_shape", [None, 10**8], r"input_shape\[1\]"),
    ("batch_input_shape", [None, None, 10**8], r"batch_input_shape\[2\]"),
])
def test_fastrnn_config_declaring_10e8_input_features(files, key, value, argument):
    """23.8 GiB of random weights were built from the config before the file's were set."""
    spec = json.loads(json.dumps(files["spec"]))
    spec["config"][key] = value
    bad = _fastrnn_file(files["dir"] / f"{key}.fastrnn", spec, files["blob"])
    _refused("load", bad, files["load"],
             rf"the config declares {argument}=100000000 input features, but the weights in "
             r"the file are for 3")


def test_fastrnn_units_1e9_without_weights(files):
    """It loaded unbuilt, and its first call built random weights: a raw MemoryError."""
    spec = json.loads(json.dumps(files["spec"]))
    spec["config"]["units"] = 10**9
    spec["weights"] = []
    bad = _fastrnn_file(files["dir"] / "units.fastrnn", spec, _npz({}))
    _refused("load", bad, files["load"], r"the LSTM has no weights in the file")


def test_fastrnn_units_1e9_with_the_files_weights(files):
    spec = json.loads(json.dumps(files["spec"]))
    spec["config"]["units"] = 10**9
    bad = _fastrnn_file(files["dir"] / "units_w.fastrnn", spec, files["blob"])
    _refused("load", bad, files["load"], r"kernel expected shape \(D, 4000000000\), got \(3, 64\)")


def test_fastrnn_torch_module_with_10e7_layers(files):
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    shapes = [(16, 3), (16, 4), (16,), (16,)]
    rng = np.random.default_rng(2)
    spec = {"class_name": "TorchRecurrent", "config": {
        "mode": "LSTM", "input_size": 3, "hidden_size": 4, "num_layers": 10**7, "bias": True,
        "batch_first": False, "dropout": 0.0, "bidirectional": False, "proj_size": 0,
        "dtype": "float32", "backend": "auto"},
        "weights": {n: f"a{i}" for i, n in enumerate(names)}}
    blob = _npz({f"a{i}": rng.uniform(-1, 1, s).astype(np.float32) for i, s in enumerate(shapes)})
    bad = _fastrnn_file(files["dir"] / "torch.fastrnn", spec, blob)
    _refused("load", bad, files["load"], r"num_layers=10000000 but the file holds 4 arrays")


def test_fastrnn_one_array_named_by_20000_layers(files):
    """Each layer copied the one 1 MiB array its description names (20 GiB in all)."""
    kernel = np.random.default_rng(3).uniform(-1, 1, (1000, 256)).astype(np.float32)
    blob = _npz({"a0": kernel, "a1": np.zeros(256, np.float32)})
    layers = [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 256},
               "weights": ["a0", "a1"]} for i in range(20000)]
    spec = {"class_name": "Sequential", "config": {"name": "m"}, "layers": layers}
    bad = _fastrnn_file(files["dir"] / "shared.fastrnn", spec, blob)
    _refused("load", bad, files["load"], r"array 'a0' is named twice")


def test_fastrnn_time_distributed_over_a_declared_10e5_lstm(files):
    """TimeDistributed made its inner layer from the config before refusing
    its class: an LSTM declaring input_dim built 160 GB of random weights."""
    inner = {"class_name": "LSTM", "config": {"units": 10**5, "input_dim": 10**5}}
    layers = [{"class_name": "TimeDistributed", "config": {"name": "td", "layer": inner},
               "weights": []}]
    spec = {"class_name": "Sequential", "config": {"name": "m"}, "layers": layers}
    bad = _fastrnn_file(files["dir"] / "td.fastrnn", spec, _npz({}))
    _refused("load", bad, files["load"], r"TimeDistributed: unsupported inner layer 'LSTM'")


# ----------------------------------------------------------------- load_stream


def _stream_file(files, name, edit=None, meta_edit=None):
    entries = dict(files["entries"])
    if meta_edit is not None:
        meta = json.loads(str(entries["meta"]))
        meta_edit(meta)
        entries["meta"] = np.array(json.dumps(meta))
    if edit is not None:
        edit(entries)
    path = files["dir"] / name
    path.write_bytes(_npz(entries))
    return path


def test_stream_batch_size_1e12(files):
    """The stream's states were allocated for the batch the file declared."""
    bad = _stream_file(files, "batch.npz", meta_edit=lambda m: m.update(batch_size=10**12))
    _refused("load_stream", bad, files["load_stream"],
             r"load_stream: .*states\[0\] \(s0\): expected shape \(1000000000000, 8\) for "
             r"batch_size=1000000000000, got \(1, 8\)")


def test_stream_states_of_empty_strings_declaring_1e10_rows(files):
    """A dtype whose items hold no bytes declared any shape at no cost, so the
    states' shapes no longer bounded batch_size (the stream allocated them)."""
    def edit(entries):
        for k in ("s0", "s1"):
            entries[k] = _npy_header((10**10, 8), "<U0")
    bad = _stream_file(files, "u0.npz", edit=edit,
                       meta_edit=lambda m: m.update(batch_size=10**10))
    _refused("load_stream", bad, files["load_stream"],
             r"array 's0' has dtype <U0, whose items hold no bytes")


def test_stream_npy_declaring_2_gib(files):
    bad = _stream_file(files, "npy2g.npz",
                       edit=lambda e: e.update(w0=_npy_header((1 << 29,)) + bytes(64)))
    _refused("load_stream", bad, files["load_stream"],
             r"array 'w0' declares shape \(536870912,\) of float32 \(2.0 GiB\)")


def test_stream_member_inflating_to_2_gib(files):
    members = [(k + ".npy", _one_npy(v)) for k, v in files["entries"].items() if k != "w0"]
    header = _npy_header((1 << 29,))
    members.append(("w0.npy", _deflate_bomb(header, 2048), len(header) + (2048 << 20)))
    bad = _zip(files["dir"] / "bomb.npz", members)
    _refused("load_stream", bad, files["load_stream"], r"member 'w0.npy' declares \d+ bytes")


def _one_npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def test_stream_config_declaring_10e8_input_features(files):
    bad = _stream_file(files, "dim.npz",
                       meta_edit=lambda m: m["layer"]["config"].update(input_dim=10**8))
    _refused("load_stream", bad, files["load_stream"],
             r"declares input_dim=100000000 input features, but the weights in the file are "
             r"for 3")


# ----------------------------------------------------------------- load_keras


def test_keras_dataset_of_24000_squared_matching_its_config(files):
    """A 2.2 GiB dataset the config asks for, stored nowhere (it reads as its fill value)."""
    model = _sequential([{"class_name": "Dense", "config": {"name": "dense", "units": 24000}}],
                        batch_shape=(None, 24000))
    bad = _keras_file(files["dir"] / "dense.keras", model,
                      {"layers/dense/vars": [("empty", (24000, 24000)), ("empty", (24000,))]})
    assert os.path.getsize(bad) < 16 << 10
    _refused("load_keras", bad, files["load_keras"],
             r"load_keras: .*dataset /layers/dense/vars/0 \(24000, 24000\) of float32 declares "
             r"2.1 GiB, more than a file of [\d.]+ KiB can hold")


def test_keras_dataset_not_matching_its_config(files):
    bad = _keras_file(files["dir"] / "lstm_big.keras", _sequential([_lstm_entry(4)]),
                      {"layers/lstm/cell/vars": [("empty", (24000, 24000)), (4, 16), (16,)]})
    _refused("load_keras", bad, files["load_keras"],
             r"dataset /layers/lstm/cell/vars/0 has shape \(24000, 24000\); layer 'lstm' "
             r"\(LSTM\) takes \[\(D, 16\), \(4, 16\), \(16,\)\] by its config")


def test_legacy_h5_dataset_of_24000_squared(files):
    model = _sequential([{"class_name": "Dense", "config": {"name": "dense", "units": 24000}}],
                        batch_shape=(None, 24000))
    bad = _legacy_h5(files["dir"] / "dense.h5", model, "dense",
                     [("empty", (24000, 24000)), ("empty", (24000,))])
    _refused("load_keras", bad, files["load_keras"],
             r"dataset /model_weights/dense/dense/v0 \(24000, 24000\) of float32 declares 2.1 GiB")


def test_legacy_h5_dataset_of_4_tib(files):
    units = 1 << 20
    model = _sequential([{"class_name": "Dense", "config": {"name": "dense", "units": units}}],
                        batch_shape=(None, units))
    bad = _legacy_h5(files["dir"] / "tib.h5", model, "dense",
                     [("empty", (units, units)), ("empty", (units,))])
    _refused("load_keras", bad, files["load_keras"], r"\(1048576, 1048576\) of float32 declares "
             r"4.0 TiB")


def test_legacy_h5_lstm_declaring_10e8_input_features(files):
    model = _sequential([_lstm_entry(16, batch_input_shape=[None, None, 10**8])])
    bad = _legacy_h5(files["dir"] / "lstm_dim.h5", model, "lstm", [(3, 64), (16, 64), (64,)])
    _refused("load_keras", bad, files["load_keras"],
             r"layer 'lstm': the config declares batch_input_shape\[2\]=100000000 input features")


@pytest.mark.parametrize("depth", [200_000, 600])
def test_keras_config_nested_deeply(files, depth):
    """200,000 levels: a raw RecursionError from the JSON parser; 600 levels parse, and
    then copying the layer's config recursed past the stack."""
    entry = _lstm_entry(4)
    entry["config"]["extra"] = "@"
    text = json.dumps(_sequential([entry])).replace('"@"', "[" * depth + "]" * depth)
    bad = _keras_file(files["dir"] / f"deep{depth}.keras", text,
                      {"layers/lstm/cell/vars": [(3, 16), (4, 16), (16,)]})
    _refused("load_keras", bad, files["load_keras"], r"config.json is nested (too deeply|more "
             r"than 100 levels)")


def test_keras_weights_member_inflating_to_2_gib(files):
    config = json.dumps(_sequential([_lstm_entry(4)])).encode()
    bad = _zip(files["dir"] / "bomb.keras", [
        ("config.json", config),
        ("model.weights.h5", _deflate_bomb(b"", 2048), 2048 << 20)])
    _refused("load_keras", bad, files["load_keras"],
             r"member 'model.weights.h5' declares 2147483648 bytes")


# ----------------------------------------------------------------- without a cap


def test_read_only_out_is_a_value_error():
    """Numba's TypingError came after a compile attempt of seconds; the state is unchanged."""
    stream = _lstm(5).stream()
    rng = np.random.default_rng(3)
    frame = rng.uniform(-1, 1, (1, 3)).astype(np.float32)
    chunk = rng.uniform(-1, 1, (1, 4, 3)).astype(np.float32)
    strided = rng.uniform(-1, 1, (1, 6)).astype(np.float32)[:, ::2]
    stream(frame)
    stream(chunk)  # this chunk shape now takes the fast path too
    before = [s.copy() for s in stream.states]
    # the cached frame, the cached chunk, and a strided frame (the validating path)
    for x in (frame, chunk, strided):
        out = np.empty((1, 5), np.float32)
        out.flags.writeable = False
        with pytest.raises(ValueError, match=r"out: expected a writeable C-contiguous float32 "
                                             r"array of shape \(1, 5\), got ndarray read-only"):
            stream(x, out=out)
        for a, b in zip(stream.states, before):
            np.testing.assert_array_equal(a, b)
    cell = _lstm(5).cell
    seq = fastrnn.RNN(cell, return_sequences=True).stream()   # the stream kernels
    assert seq.backend == "stream"
    out = np.empty((1, 4, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: .* read-only"):
        seq(chunk, out=out)
    out.flags.writeable = True
    assert seq(chunk, out=out) is out
    want = fastrnn.RNN(cell, return_sequences=True, backend="reference")(chunk)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


def test_external_storage_and_links_are_refused(files, tmp_path):
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["x"] = np.ones((3, 16), np.float32)
    model = _sequential([_lstm_entry(4)])
    for name, make in (
            ("link", lambda g: g.__setitem__("0", h5py.ExternalLink(str(outside), "/x"))),
            ("storage", lambda g: g.create_dataset("0", shape=(3, 16), dtype="f4",
                                                   external=[("/dev/zero", 0, 3 * 16 * 4)]))):
        path = tmp_path / f"{name}.weights.h5"
        with h5py.File(path, "w") as f:
            g = f.create_group("layers/lstm/cell/vars")
            make(g)
            g["1"] = np.ones((4, 16), np.float32)
            g["2"] = np.ones(16, np.float32)
        with pytest.raises(ValueError, match="external link|stored outside the file"):
            fastrnn.load_keras(path, config=model)


def test_unbuilt_layers_are_not_saved(tmp_path):
    for obj in (fastrnn.LSTM(4), fastrnn.GRUCell(3),
                fastrnn.Sequential([fastrnn.SimpleRNN(2)])):
        with pytest.raises(ValueError, match="is not built; build it or set its weights"):
            fastrnn.save(obj, tmp_path / "u.fastrnn")


def test_declared_sizes_that_match_still_load(files, tmp_path):
    """Shape arguments that agree with the weights load, from the file's weights only."""
    layer = _lstm()
    x = np.random.default_rng(4).uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    spec = json.loads(json.dumps(files["spec"]))
    spec["config"]["batch_input_shape"] = [None, None, 3]
    loaded = fastrnn.load(_fastrnn_file(tmp_path / "ok.fastrnn", spec, files["blob"]))
    np.testing.assert_array_equal(loaded(x), layer(x))
    bi = fastrnn.Bidirectional(_lstm())
    bi.set_weights(layer.get_weights() * 2)
    fastrnn.save(bi, tmp_path / "bi.fastrnn")
    with zipfile.ZipFile(tmp_path / "bi.fastrnn") as z:
        header, blob = json.loads(z.read("fastrnn.json")), z.read("arrays.npz")
    for dim, ok in ((3, True), (5, False)):
        spec = json.loads(json.dumps(header["object"]))
        spec["config"]["layer"]["config"]["input_dim"] = dim
        path = _fastrnn_file(tmp_path / f"bi{dim}.fastrnn", spec, blob)
        if ok:
            np.testing.assert_array_equal(fastrnn.load(path)(x), bi(x))
        else:
            with pytest.raises(ValueError, match="declares input_dim=5 input features"):
                fastrnn.load(path)
    legacy = _legacy_h5(tmp_path / "ok.h5", _sequential(
        [_lstm_entry(16, batch_input_shape=[None, None, 3])]), "lstm",
        [tuple(w.shape) for w in layer.get_weights()])
    with h5py.File(legacy, "a") as f:
        for i, w in enumerate(layer.get_weights()):
            f[f"model_weights/lstm/lstm/v{i}"][...] = w
    np.testing.assert_array_equal(fastrnn.load_keras(legacy)(x), layer(x))


def test_recompressed_files_still_load(files, tmp_path):
    """A fastrnn file re-zipped with deflate inflates within its limit and loads."""
    path = tmp_path / "deflated.fastrnn"
    with zipfile.ZipFile(files["load"]) as src, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    x = np.random.default_rng(5).uniform(-1, 1, (2, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(fastrnn.load(path)(x), fastrnn.load(files["load"])(x))


def test_stream_file_without_its_states_or_weights(files):
    for name, edit, message in (
            ("nostates", lambda m: m.update(n_states=0), "carries 2 states, the file lists 0"),
            ("noweights", lambda m: m.update(n_weights=0), "holds no weights"),
            ("badcount", lambda m: m.update(n_weights="3"), "n_weights expected a non-negative")):
        with pytest.raises(ValueError, match=f"load_stream: .*{message}"):
            load_stream(_stream_file(files, f"{name}.npz", meta_edit=edit))


def test_stream_files_that_provoke_other_errors_are_value_errors(files):
    """Whatever a damaged or edited stream file provokes is a ValueError
    naming the file: an unsupported compression method in the archive's
    directory (one byte), a Bidirectional layer, a config of the wrong type
    or with a bad flag."""
    with open(files["load_stream"], "rb") as f:
        raw = bytearray(f.read())
    central = raw.find(b"PK\x01\x02")
    raw[central + 10:central + 12] = struct.pack("<H", 99)  # compression method 99
    method = files["dir"] / "method.npz"
    method.write_bytes(bytes(raw))
    bidirectional = fastrnn.serialize(fastrnn.Bidirectional(fastrnn.LSTM(8)))
    for path, message in (
            (method, "not supported"),
            (_stream_file(files, "bi.npz", meta_edit=lambda m: m.update(layer=bidirectional)),
             "its layer is a Bidirectional, which does not stream"),
            (_stream_file(files, "cfg.npz", meta_edit=lambda m: m["layer"].update(config=[])),
             "invalid stream description"),
            (_stream_file(files, "flag.npz",
                          meta_edit=lambda m: m["layer"]["config"].update(return_state="yes")),
             "return_state"),
            (_stream_file(files, "int.npz", edit=lambda e: e.update(s1=np.ones((1, 8), "i4"))),
             r"states\[1\] \(s1\): expected floats, got dtype int32")):
        with pytest.raises(ValueError, match=f"load_stream: .*{re.escape(path.name)}.*{message}"):
            load_stream(path)

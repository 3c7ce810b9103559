"""fastrnn.dask: predict over dask arrays and dataframes, the worker plugin, the CLI.

Everything that runs on a cluster uses one module-scoped
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``; the
larger-than-memory test starts its own, with a small ``memory_limit``.
"""

import os
import pickle
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import fastrnn  # noqa: E402
from fastrnn import dask as fdask  # noqa: E402
from fastrnn.cli.predict import main as predict_main  # noqa: E402

Client = distributed.Client
LocalCluster = distributed.LocalCluster

# Every computation gets a deadline: a paused or wedged worker fails the test
# instead of hanging CI.
TIMEOUT = 240


@pytest.fixture(scope="module")
def client():
    # Compile the kernels here first: the workers then load them from Numba's
    # cache (NUMBA_CACHE_DIR is inherited) instead of compiling them twice.
    fdask._warm()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", memory_limit="1GiB") as cluster:
        with Client(cluster) as c:
            c.register_plugin(fdask.FastrnnPlugin())
            yield c


def _built(layer, shape, seed=0):
    layer.build(shape)
    # Fresh, non-trivial weights (never the initializers' zeros/orthogonal).
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.standard_normal(w.shape) * 0.3).astype(w.dtype)
                       for w in layer.get_weights()])
    return layer


class _TwoLayers:
    """A user model: two fastrnn layers behind one call, no compute_output_shape
    (so fastrnn.dask infers the output shape by running it on zeros)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    @property
    def built(self):
        return self.first.built and self.second.built

    def __call__(self, x, mask=None):
        return self.second(self.first(x, mask=mask), mask=mask)


class _Counted:
    """A layer wrapper that counts how often this process unpickled it."""

    unpickled = 0

    def __init__(self, layer):
        self.layer = layer
        self.built = layer.built

    def __call__(self, x, mask=None):
        return self.layer(x, mask=mask)

    def compute_output_shape(self, shape):
        return self.layer.compute_output_shape(shape)

    def __setstate__(self, state):
        type(self).unpickled += 1
        self.__dict__.update(state)


def _unpickled_count():
    return _Counted.unpickled


def _compute(client, collection):
    return client.compute(collection).result(timeout=TIMEOUT)


# ----------------------------------------------------------------- packaging

def test_import_fastrnn_does_not_import_dask():
    code = ("import sys, fastrnn, fastrnn.dask; "
            "bad = [m for m in ('dask', 'distributed', 'zarr', 'pyarrow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------ results on a cluster

def _models():
    T, D = 9, 5
    lstm = _built(fastrnn.LSTM(7), (1, T, D), 1)
    gru = _built(fastrnn.GRU(6, return_sequences=True), (1, T, D), 2)
    bidi = fastrnn.Bidirectional(fastrnn.LSTM(4, return_sequences=True))
    _built(bidi, (1, T, D), 3)
    stacked = fastrnn.RNN([fastrnn.LSTMCell(6), fastrnn.GRUCell(3)])
    _built(stacked, (1, T, D), 4)
    two = _TwoLayers(_built(fastrnn.GRU(5, return_sequences=True), (1, T, D), 5),
                     _built(fastrnn.LSTM(3), (1, T, 5), 6))
    models = {"lstm": lstm, "gru_sequences": gru, "bidirectional": bidi,
              "stacked_cells": stacked, "two_layer_model": two}
    if hasattr(fastrnn, "Sequential"):
        from fastrnn.models import Dense

        rng = np.random.default_rng(7)
        dense = Dense(3, activation="tanh")
        dense.set_weights([rng.standard_normal((4, 3)).astype(np.float32),
                           rng.standard_normal(3).astype(np.float32)])
        models["sequential_stack"] = fastrnn.Sequential([
            _built(fastrnn.LSTM(6, return_sequences=True), (1, T, D), 8),
            _built(fastrnn.GRU(4), (1, T, 6), 9), dense])
    return models


def _token_model():
    from fastrnn.models import Embedding

    # Token 0 is padding (mask_zero), as in Keras: padded rows match rows alone.
    embedding = Embedding(50, 4, mask_zero=True)
    embedding.set_weights([np.random.default_rng(10).standard_normal((50, 4)).astype(np.float32)])
    return fastrnn.Sequential([embedding, _built(fastrnn.LSTM(5), (1, 7, 4), 11)])


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("ragged", ["lengths", "mask", None])
def test_cluster_equals_one_in_process_call(client, name, ragged):
    model = _models()[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}-{ragged}".encode()))
    n, T, D = 103, 9, 5
    x = rng.standard_normal((n, T, D)).astype(np.float32)
    lengths = rng.integers(0, T + 1, n)
    lengths[:3] = [T, 1, 0]
    mask = np.arange(T)[None, :] < lengths[:, None]
    want = model(x, mask=mask if ragged else None)

    xd = da.from_array(x, chunks=(20, 4, D))  # split in time too: predict makes it whole
    kwargs = {}
    if ragged == "lengths":
        kwargs["lengths"] = da.from_array(lengths, chunks=(20,))
    elif ragged == "mask":
        kwargs["mask"] = mask
    y = fdask.predict(model, xd, batch_size=16, **kwargs)
    assert y.chunks[0] == xd.chunks[0]
    assert y.shape == want.shape and y.dtype == np.float32
    got = _compute(client, y)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not hasattr(fastrnn, "Sequential"), reason="no fastrnn.Sequential")
def test_token_ids_into_an_embedding_model(client):
    model = _token_model()
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 8, 41)
    tokens = np.where(np.arange(7)[None, :] < lengths[:, None], rng.integers(1, 50, (41, 7)), 0)
    want = model(tokens, mask=np.arange(7)[None, :] < lengths[:, None])
    y = fdask.predict(model, da.from_array(tokens, chunks=(10, 7)), lengths=lengths)
    np.testing.assert_allclose(_compute(client, y), want, rtol=1e-5, atol=1e-6)


def test_memory_mapped_npy_is_read_by_path_in_tasks(client, tmp_path):
    model = _models()["gru_sequences"]
    x = np.random.default_rng(8).standard_normal((400, 9, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    y = fdask.predict(model, np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert len(pickle.dumps(dict(y.__dask_graph__()))) < x.nbytes / 10
    np.testing.assert_allclose(_compute(client, y), model(x), rtol=1e-5, atol=1e-6)


def test_threads_scheduler_and_numpy_input():
    model = _models()["lstm"]
    x = np.random.default_rng(7).standard_normal((30, 9, 5)).astype(np.float32)
    with dask.config.set(scheduler="threads"):
        y = fdask.predict(model, x)
        np.testing.assert_allclose(y.compute(), model(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- the model, once

def _big_lstm():
    # 4 * 640 * (1280 + 640) float32 weights + bias: 19.7 MB (set directly:
    # the orthogonal initializer of build() is slow at this size). These tests
    # are about graphs: the NumPy backend spares them compiling kernels for it.
    rng = np.random.default_rng(5)
    layer = fastrnn.LSTM(640, backend="reference")
    layer.set_weights([rng.standard_normal((1280, 2560), np.float32) * 0.02,
                       rng.standard_normal((640, 2560), np.float32) * 0.02,
                       np.zeros(2560, np.float32)])
    return layer


def _weight_bytes(model):
    return sum(w.nbytes for w in model.get_weights())


def test_graph_holds_the_model_once_without_a_client():
    model = _big_lstm()
    size = _weight_bytes(model)
    assert size > 19e6
    x = da.zeros((100, 2, 1280), chunks=(1, 2, 1280), dtype=np.float32)
    with dask.config.set(scheduler="sync"):
        y = fdask.predict(model, x)
    graph = dict(y.__dask_graph__())
    assert y.numblocks[0] == 100
    holding = [key for key, task in graph.items() if len(pickle.dumps(task)) > size // 2]
    assert len(holding) == 1, holding  # one key holds the weights; tasks refer to it
    total = len(pickle.dumps(graph))
    assert total < size + 2e6, total  # not 100 copies: about one model plus small tasks


def test_graph_with_a_client_is_small_and_the_model_reaches_each_worker_once(client):
    model = _Counted(_big_lstm())
    size = _weight_bytes(model.layer)
    before = client.run(_unpickled_count)
    x = da.random.default_rng(0).standard_normal((100, 2, 1280), chunks=(1, 2, 1280),
                                                  dtype=np.float32)
    y = fdask.predict(model, x).sum(axis=1)
    graph = dict(y.__dask_graph__())
    assert len(pickle.dumps(graph)) < size / 20  # the model is a scattered key, not bytes
    with warnings.catch_warnings():
        # distributed warns "Sending large graph of size ..." above 10 MB.
        warnings.filterwarnings("error", message=".*[Ll]arge graph.*")
        assert np.isfinite(_compute(client, y)).all()
    after = client.run(_unpickled_count)
    received = {w: after[w] - before.get(w, 0) for w in after}
    # Exactly once: a scatter with broadcast=True failed this about one run in
    # ten under load (the Active Memory Manager dropped the replica sent up
    # front before the graph arrived, and the worker fetched it again).
    assert all(v == 1 for v in received.values()), received


# ------------------------------------------------------- larger than memory

def test_dataset_larger_than_the_cluster_memory_streams_zarr_to_zarr(tmp_path):
    limit = 384 * 2**20  # per worker; a warm worker with Numba's kernels is ~200 MiB
    rows, T, D, chunk = 36864, 16, 1024, 256
    nbytes = rows * T * D * 4
    assert nbytes >= 3 * 2 * limit  # 2.25 GiB of float32 for 768 MiB of workers
    src, dst = str(tmp_path / "x.zarr"), str(tmp_path / "y.zarr")
    # Three distinct chunks, written once by zarr; the other chunk files are hard
    # links to them (writing 2.25 GiB would dominate the test's time). The
    # workers still read, decompress and score every chunk: 2.25 GiB in all.
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((chunk, T, D), np.float32) for _ in range(3)]
    z = zarr.create_array(store=src, shape=(rows, T, D), chunks=(chunk, T, D), dtype="float32")
    for i in range(3):
        z[i * chunk:(i + 1) * chunk] = blocks[i]
    encode = z.metadata.chunk_key_encoding.encode_chunk_key
    for i in range(3, rows // chunk):
        target = os.path.join(src, encode((i, 0, 0)))
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(os.path.join(src, encode((i % 3, 0, 0))), target)
        except OSError:  # no hard links on this file system: write it
            z[i * chunk:(i + 1) * chunk] = blocks[i % 3]
    model = _built(fastrnn.LSTM(4), (1, T, D), 9)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", memory_limit=limit) as cluster, \
            Client(cluster) as c:
        c.register_plugin(fdask.FastrnnPlugin())
        pids = c.run(os.getpid)
        from distributed.diagnostics import MemorySampler

        sampler = MemorySampler()
        with sampler.sample("predict", client=c, interval=0.25):
            y = fdask.predict(model, da.from_zarr(src))
            assert y.numblocks[0] == rows // chunk
            c.compute(y.to_zarr(dst, compute=False)).result(timeout=TIMEOUT)
        assert c.run(os.getpid) == pids  # no worker was restarted
        peak = sampler.to_pandas()["predict"].max()
        print(f"streamed {nbytes / 2**30:.2f} GiB through 2 workers of {limit / 2**20:.0f} MiB; "
              f"peak cluster process memory {peak / 2**20:.0f} MiB")
        assert peak < 2 * limit, peak
    out = zarr.open_array(dst, mode="r")
    assert out.shape == (rows, 4)
    for i in (0, 1, 2, rows // chunk - 1):
        want = model(blocks[i % 3])
        np.testing.assert_allclose(out[i * chunk:(i + 1) * chunk], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ parquet

def _parquet(tmp_path, rng, D=3, n=57):
    seqs = [rng.standard_normal((int(rng.integers(0, 12)), D)).astype(np.float32)
            for _ in range(n)]
    seqs[5] = seqs[5][:1]
    table = pa.table({
        "id": np.arange(n),
        "seq": pa.array([s.tolist() for s in seqs], type=pa.list_(pa.list_(pa.float32()))),
    })
    path = tmp_path / "seqs.parquet"
    pq.write_table(table, path, row_group_size=13)
    return str(path), seqs


@pytest.mark.parametrize("dtype_backend", [None, "pyarrow"])
def test_parquet_rows_equal_each_sequence_alone(client, tmp_path, dtype_backend):
    rng = np.random.default_rng(11)
    path, seqs = _parquet(tmp_path, rng)
    kwargs = {"dtype_backend": dtype_backend} if dtype_backend else {}
    ddf = dd.read_parquet(path, split_row_groups=True, **kwargs)
    assert ddf.npartitions > 1
    gru = _built(fastrnn.GRU(5), (1, 4, 3), 12)
    lstm = _built(fastrnn.LSTM(4, return_sequences=True), (1, 4, 3), 13)
    got_gru = _compute(client, fdask.predict_partitions(gru, ddf, "seq"))
    got_lstm = _compute(client, fdask.predict_partitions(lstm, ddf, "seq", batch_size=4))
    assert len(got_gru) == len(got_lstm) == len(seqs)
    for i, s in enumerate(seqs):
        alone = s[None]
        np.testing.assert_allclose(got_gru.iloc[i], gru(alone)[0], rtol=1e-5, atol=1e-6)
        assert got_lstm.iloc[i].shape == (len(s), 4)
        np.testing.assert_allclose(got_lstm.iloc[i], lstm(alone)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not hasattr(fastrnn, "Sequential"), reason="no fastrnn.Sequential")
def test_parquet_token_lists(tmp_path):
    rng = np.random.default_rng(13)
    seqs = [rng.integers(1, 50, int(rng.integers(1, 8))) for _ in range(25)]
    pq.write_table(pa.table({"t": pa.array([s.tolist() for s in seqs], pa.list_(pa.int32()))}),
                   tmp_path / "t.parquet", row_group_size=7)
    ddf = dd.read_parquet(str(tmp_path / "t.parquet"), split_row_groups=True)
    model = _token_model()
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, ddf, "t").compute()
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got.iloc[i], model(s[None])[0], rtol=1e-5, atol=1e-6)


def test_parquet_single_feature_lists(tmp_path):
    rng = np.random.default_rng(12)
    seqs = [rng.standard_normal(int(rng.integers(1, 8))).astype(np.float32) for _ in range(20)]
    pq.write_table(pa.table({"s": pa.array([s.tolist() for s in seqs])}), tmp_path / "a.parquet",
                   row_group_size=6)
    ddf = dd.read_parquet(str(tmp_path / "a.parquet"), split_row_groups=True)
    model = _built(fastrnn.SimpleRNN(3), (1, 4, 1), 14)
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, ddf, "s").compute()
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got.iloc[i], model(s[None, :, None])[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ plugin

def test_plugin_caps_threads_and_warms(client):
    info = client.run(fdask.worker_info)
    assert len(info) == 2
    for worker_info in info.values():
        assert worker_info["nthreads"] == 1
        assert worker_info["task_threads"] == 1
        if "fastrnn_threads" in worker_info:
            assert worker_info["fastrnn_threads"] == 1
        assert worker_info["warmed"]


def test_plugin_is_a_worker_plugin():
    assert isinstance(fdask.FastrnnPlugin(warm=False), distributed.WorkerPlugin)
    plugin = pickle.loads(pickle.dumps(fdask.FastrnnPlugin(nthreads=3, warm=False)))
    assert type(plugin) is fdask.FastrnnPlugin and plugin.nthreads == 3


# ------------------------------------------------------------- bad inputs

class _NeverCompute:
    """An array-like source whose reading fails the test: errors come first."""

    shape, dtype, ndim = (40, 6, 3), np.dtype(np.float32), 3

    def __getitem__(self, item):
        raise AssertionError("a task ran before the error")


def _guarded(shape=(40, 6, 3), chunks=(10, 6, 3)):
    src = _NeverCompute()
    src.shape, src.ndim = shape, len(shape)
    return da.from_array(src, chunks=chunks[: len(shape)], asarray=False,
                         meta=np.empty((0,) * len(shape), np.float32))


def test_bad_inputs_fail_before_any_task():
    layer = _built(fastrnn.LSTM(3), (1, 6, 3))
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match=r"x: expected a 3D array \(n, time, features\)"):
            fdask.predict(layer, _guarded((40, 6), (10, 6)))
        with pytest.raises(ValueError, match=r"x: expected a 3D array"):
            fdask.predict(layer, _guarded((40, 6, 3, 1), (10, 6, 3, 1)))
        with pytest.raises(ValueError, match=r"lengths: chunks \(20, 20\) do not line up"):
            fdask.predict(layer, _guarded(), lengths=da.ones(40, chunks=20, dtype=int))
        with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 6\]"):
            fdask.predict(layer, _guarded(), lengths=np.full(40, 7))
        with pytest.raises(ValueError, match=r"lengths: expected shape \(n,\) = \(40,\)"):
            fdask.predict(layer, _guarded(), lengths=np.ones(39, int))
        with pytest.raises(ValueError, match=r"mask: chunks"):
            fdask.predict(layer, _guarded(), mask=da.ones((40, 6), chunks=(8, 6), dtype=bool))
        with pytest.raises(ValueError, match="lengths and mask"):
            fdask.predict(layer, _guarded(), lengths=np.ones(40, int), mask=np.ones((40, 6)))
        with pytest.raises(ValueError, match=r"mask: expected booleans or 0/1 values, got the value 0.5"):
            fdask.predict(layer, _guarded(), mask=np.full((40, 6), 0.5))
        with pytest.raises(ValueError, match="never built"):
            fdask.predict(fastrnn.GRU(4), _guarded())
        with pytest.raises(ValueError, match="never built"):
            fdask.predict_partitions(fastrnn.GRU(4), None, "seq")
        with pytest.raises(TypeError, match="ddf: expected a dask.dataframe"):
            fdask.predict_partitions(layer, None, "seq")
        ddf = dd.from_dict({"a": [1.0, 2.0]}, npartitions=1)
        with pytest.raises(KeyError, match="'seq' is not a column"):
            fdask.predict_partitions(layer, ddf, "seq")
        with pytest.raises(ValueError, match="expected 5 features"):
            fdask.predict(_built(fastrnn.LSTM(3), (1, 6, 5)), _guarded())
        with pytest.raises(ValueError, match="return_state"):
            fdask.predict(_built(fastrnn.LSTM(3, return_state=True), (1, 6, 3)), _guarded())
        with pytest.raises(TypeError, match=r"Stream carries state.*predict its layer"):
            fdask.predict(layer.stream(), _guarded())
        with pytest.raises(TypeError, match=r"ModelStream carries state.*predict its model"):
            fdask.predict(fastrnn.Sequential([layer]).stream(), _guarded())
        with pytest.raises(ValueError, match="batch_size"):
            fdask.predict(layer, _guarded(), batch_size=0)
        unknown = da.zeros((40, 6, 3), chunks=(10, 6, 3))[da.arange(40, chunks=10) > 3]
        with pytest.raises(ValueError, match="unknown chunk sizes"):
            fdask.predict(layer, unknown)
        with pytest.raises(TypeError, match="does not accept inputs"):
            fdask.predict(layer, da.zeros((40, 6, 3), chunks=(10, 6, 3), dtype=np.int64))


def test_dask_mask_values_checked_in_the_tasks():
    """A lazy mask cannot be checked up front: its chunk's task raises, as a
    layer call would, instead of reading 2 as True."""
    layer = _built(fastrnn.LSTM(3), (1, 6, 3))
    x = da.from_array(np.ones((20, 6, 3), np.float32), chunks=(10, 6, 3))
    good = da.from_array(np.ones((20, 6), np.int8), chunks=(10, 6))
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(fdask.predict(layer, x, mask=good).compute(), layer(np.ones((20, 6, 3), np.float32)))
        bad = da.from_array(np.full((20, 6), 2, np.int8), chunks=(10, 6))
        with pytest.raises(ValueError, match="mask: expected booleans or 0/1 values, got the value 2"):
            fdask.predict(layer, x, mask=bad).compute()


def test_cli_rejects_bad_files_before_any_task(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 3, 2), np.float32))
    out = tmp_path / "y.zarr"
    for model, message in [("model.pt", "PyTorch"), ("model.pkl", "pickle"),
                           ("model.txt", "cannot load|does not have")]:
        (tmp_path / model).write_text("not a model")
        assert predict_main([str(tmp_path / model), str(x), str(out)]) == 2
        err = capsys.readouterr().err
        assert "MODEL" in err and any(m in err for m in message.split("|")), err
    assert predict_main([str(tmp_path / "missing.keras"), str(x), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def _saved_model(tmp_path, layer):
    if not hasattr(fastrnn, "save"):
        pytest.skip("fastrnn.save is not available")
    path = str(tmp_path / "model.fastrnn")
    fastrnn.save(layer, path)
    return path


def test_cli_rejects_bad_input_arrays(tmp_path, capsys):
    model = _saved_model(tmp_path, _built(fastrnn.LSTM(3), (1, 6, 3)))
    out = tmp_path / "y.zarr"
    (tmp_path / "x.csv").write_text("1,2,3")
    np.save(tmp_path / "x2.npy", np.zeros((4, 6), np.float32))
    np.save(tmp_path / "x5.npy", np.zeros((4, 6, 5), np.float32))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("inputs", shape=(4, 6, 3), dtype="float32")
    for name, message in [("x.csv", "expected a Zarr array"), ("x2.npy", "3D array"),
                          ("x5.npy", "expected 3 features"), ("g.zarr", "g.zarr/inputs")]:
        assert predict_main([model, str(tmp_path / name), str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------- CLI

@pytest.mark.parametrize("where", ["threads", "scheduler", "no-dask"])
def test_cli_scores_npy_and_zarr_into_zarr(client, tmp_path, capsys, where):
    layer = _built(fastrnn.GRU(4, return_sequences=True), (1, 6, 3), 21)
    model = _saved_model(tmp_path, layer)
    x = np.random.default_rng(22).standard_normal((50, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    zarr.create_array(store=str(tmp_path / "x.zarr"), data=x, chunks=(8, 6, 3))
    extra = {"threads": [], "scheduler": ["--scheduler", client.scheduler.address],
             "no-dask": ["--workers", "0"]}[where]
    for name in ("x.npy", "x.zarr"):
        out = str(tmp_path / f"y-{name}.zarr")
        rc = predict_main([model, str(tmp_path / name), out, "--batch-size", "7",
                                 "--chunk-rows", "16", "--no-progress"] + extra)
        assert rc == 0
        assert "sequences/s" in capsys.readouterr().out
        np.testing.assert_allclose(zarr.open_array(out, mode="r")[...], layer(x),
                                   rtol=1e-5, atol=1e-6)


def test_cli_scores_a_keras_file(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(4, return_sequences=True),
                              keras.layers.LSTM(3)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.random.default_rng(23).standard_normal((30, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "y.zarr")
    assert predict_main([path, str(tmp_path / "x.npy"), out, "--no-progress"]) == 0
    np.testing.assert_allclose(zarr.open_array(out, mode="r")[...],
                               np.asarray(model.predict(x, verbose=0)), rtol=1e-5, atol=1e-5)


def test_cli_example_and_comparison_table(tmp_path, capsys):
    if not hasattr(fastrnn, "save"):
        pytest.skip("fastrnn.save is not available")
    d = str(tmp_path / "demo")
    assert predict_main(["--example", d, "--rows", "300", "--time", "12",
                               "--features", "4", "--units", "8"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "y.zarr")
    threads_before = fastrnn.get_num_threads()
    rc = predict_main([f"{d}/model.fastrnn", f"{d}/x.npy", out, "--lengths",
                             f"{d}/lengths.npy", "--workers", "0,threads", "--chunk-rows", "64",
                             "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "1 process, no Dask" in text and "Dask local threads" in text
    assert fdask._TASK_THREADS is None  # the CLI put this process's thread cap back
    assert fastrnn.get_num_threads() == threads_before
    model = fastrnn.load(f"{d}/model.fastrnn")
    x, lengths = np.load(f"{d}/x.npy"), np.load(f"{d}/lengths.npy")
    want = model(x, mask=np.arange(12)[None, :] < lengths[:, None])
    np.testing.assert_allclose(zarr.open_array(out, mode="r")[...], want, rtol=1e-5, atol=1e-6)
    assert predict_main([f"{d}/model.fastrnn", f"{d}/x.npy", out, "--workers", "x"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert predict_main([f"{d}/model.fastrnn", f"{d}/x.npy", out, "--overwrite",
                               "--chunk-rows", "0"]) == 2
    assert "--chunk-rows" in capsys.readouterr().err
    assert predict_main([f"{d}/model.fastrnn", f"{d}/x.npy", out]) == 2
    assert "exists" in capsys.readouterr().err


def test_readme_example_runs_scaled_down(tmp_path, monkeypatch):
    import re

    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    section = open(readme, encoding="utf-8").read().split("## Scaling out with Dask", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "100_000" in code and "5_000" in code
    code = code.replace("100_000", "2_000").replace("5_000", "500")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(code, "README dask example", "exec"), namespace)
    assert namespace["y"].shape == (2000, 64) and namespace["y"].numblocks == (4, 1)
    scores = zarr.open_array(str(tmp_path / "scores.zarr"), mode="r")[...]
    assert scores.shape == (2000, 64) and np.isfinite(scores).all()


@pytest.mark.parametrize("workers", [[], ["--workers", "0"]])
def test_cli_checks_every_length_before_any_task(tmp_path, capsys, workers):
    """The last row's length is out of range: refused up front (status 2)
    in every mode, nothing written (--workers 0 scored it silently)."""
    model = _saved_model(tmp_path, _built(fastrnn.LSTM(3), (1, 6, 3)))
    np.save(tmp_path / "x.npy", np.ones((40, 6, 3), np.float32))
    for name, lengths in [("long", [6] * 39 + [99]), ("negative", [-1] + [6] * 39)]:
        np.save(tmp_path / f"{name}.npy", np.asarray(lengths))
        out = tmp_path / f"y-{name}.zarr"
        rc = predict_main([model, str(tmp_path / "x.npy"), str(out), "--lengths",
                           str(tmp_path / f"{name}.npy"), "--chunk-rows", "10",
                           "--no-progress"] + workers)
        assert rc == 2
        assert "--lengths: expected values in [0, 6]" in capsys.readouterr().err
        assert not out.exists()


def test_cli_failure_while_scoring_is_one_line(tmp_path, capsys):
    """A NaN in row 35 of a nan_policy="raise" model fails its chunk's task:
    status 1 and one line naming the error, not a traceback."""
    layer = _built(fastrnn.LSTM(3, nan_policy="raise"), (1, 6, 3))
    model = _saved_model(tmp_path, layer)
    x = np.ones((40, 6, 3), np.float32)
    x[35, 2, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    rc = predict_main([model, str(tmp_path / "x.npy"), str(tmp_path / "y.zarr"),
                       "--chunk-rows", "10", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert "error while scoring" in err and "NaN" in err


def test_cli_refuses_a_file_as_output_and_bad_example_sizes(tmp_path, capsys):
    model = _saved_model(tmp_path, _built(fastrnn.LSTM(3), (1, 6, 3)))
    np.save(tmp_path / "x.npy", np.ones((4, 6, 3), np.float32))
    (tmp_path / "y.zarr").write_text("a file")
    assert predict_main([model, str(tmp_path / "x.npy"), str(tmp_path / "y.zarr"),
                         "--overwrite"]) == 2
    assert "is a file; expected a Zarr array" in capsys.readouterr().err
    for bad in ("-3", "0", "x"):
        with pytest.raises(SystemExit) as exit_:
            predict_main(["--example", str(tmp_path / "ex"), "--rows", bad])
        assert exit_.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err


def test_numpy_input_without_steps_gives_zeros():
    """T = 0, as a layer call: zeros of the output's shape (from_array's
    automatic chunks divided by zero)."""
    layer = _built(fastrnn.LSTM(6), (1, 5, 3))
    x = np.zeros((3, 0, 3), np.float32)
    with dask.config.set(scheduler="sync"):
        y = fdask.predict(layer, x).compute()
    np.testing.assert_array_equal(y, layer(x))
    assert y.shape == (3, 6)


def test_object_column_turned_to_strings_says_why(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    layer = _built(fastrnn.LSTM(2), (1, 3, 3))
    rows = pd.Series([np.ones((3, 3), np.float32), np.ones((2, 3), np.float32)], dtype=object)
    with dask.config.set({"dataframe.convert-string": True}):
        ddf = dd.from_pandas(pd.DataFrame({"s": rows}), npartitions=1)
        with pytest.raises(TypeError, match="dataframe.convert-string"):
            fdask.predict_partitions(layer, ddf, "s").compute()
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.from_pandas(pd.DataFrame({"s": rows}), npartitions=1)
        got = fdask.predict_partitions(layer, ddf, "s").compute()
    np.testing.assert_allclose(got.iloc[1], layer(np.ones((1, 2, 3), np.float32))[0], atol=1e-6)


def test_copy_on_write_memmap_runs_what_it_holds(client, tmp_path):
    """A memmap opened copy-on-write (``mode="c"``) and edited in memory runs
    its edited values (the tasks cannot read those from the file)."""
    model = _models()["gru_sequences"]
    x = np.random.default_rng(9).standard_normal((6, 9, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    edited = np.load(tmp_path / "x.npy", mmap_mode="c")
    edited[:3] = 0.5
    got = _compute(client, fdask.predict(model, edited))
    np.testing.assert_allclose(got, model(np.asarray(edited)), rtol=1e-6, atol=1e-7)


def test_object_arrays_and_number_rows_are_named(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    layer = _built(fastrnn.LSTM(2), (1, 3, 1))
    with pytest.raises(TypeError, match=r"^x: expected an array of numbers, got dtype object"):
        fdask.predict(layer, np.zeros((2, 3, 1), dtype=object))
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.from_pandas(pd.DataFrame({"k": pd.Series([1.0, [2.0, 3.0]], dtype=object)}),
                             npartitions=1)
        with pytest.raises(TypeError, match=r"k: row 0 is a single number, not a sequence"):
            _compute(client, fdask.predict_partitions(layer, ddf, "k"))


def test_plugins_with_other_settings_are_other_plugins():
    """Registering the plugin again with the same settings is skipped
    (idempotent, one name); with other settings it is another plugin, so
    they are set up too."""
    same = {fdask.FastrnnPlugin(warm=False).name, fdask.FastrnnPlugin(warm=False).name}
    other = fdask.FastrnnPlugin(nthreads=2, warm=True).name
    assert len(same) == 1 and other not in same
    assert fdask.FastrnnPlugin.idempotent


# ------------------------------------------------- layout, dtype, empty rows

def _time_major_models():
    T, D = 6, 3
    lstm = _built(fastrnn.LSTM(4, time_major=True, return_sequences=True), (T, 1, D), 20)
    bidi = fastrnn.Bidirectional(fastrnn.GRU(3, time_major=True))
    _built(bidi, (T, 1, D), 21)
    stacked = _built(fastrnn.RNN([fastrnn.LSTMCell(4), fastrnn.GRUCell(3)], time_major=True),
                     (T, 1, D), 22)
    from fastrnn.models import Masking

    sequential = fastrnn.Sequential([Masking(0.0), _built(fastrnn.SimpleRNN(3, time_major=True),
                                                          (T, 1, D), 23)])
    user = _TwoLayers(_built(fastrnn.GRU(5, return_sequences=True), (1, T, D), 24),
                      _built(fastrnn.LSTM(3, time_major=True), (T, 1, 5), 25))
    return {"lstm": lstm, "bidirectional": bidi, "stacked_cells": stacked,
            "sequential": sequential, "user_model": user}


@pytest.mark.parametrize("name", list(_time_major_models()))
def test_time_major_models_are_refused(tmp_path, name):
    """A time-major layer reads axis 0 as time, but the chunks split axis 0
    and the partitions pad (rows, time, features): refused wherever it sits."""
    model = _time_major_models()[name]
    rng = np.random.default_rng(26)
    x = rng.standard_normal((7, 6, 3)).astype(np.float32)
    pq.write_table(pa.table({"s": pa.array([r.tolist() for r in x],
                                           pa.list_(pa.list_(pa.float32())))}),
                   tmp_path / "s.parquet")
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match=r"^model: .*time_major=True"):
            fdask.predict(model, da.from_array(x, chunks=(3, 6, 3)))
        with pytest.raises(ValueError, match=r"^model: .*time_major=True"):
            fdask.predict_partitions(model, dd.read_parquet(str(tmp_path / "s.parquet")), "s")


def _empty_rows_parquet(tmp_path, rng, typ, D=3):
    """Two partitions: [a sequence, an empty row], [two empty rows]."""
    seqs = [rng.standard_normal((4, D)).astype(np.float32)] + [np.zeros((0, D), np.float32)] * 3
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"s": pa.array([s.tolist() for s in seqs], typ)}), path,
                   row_group_size=2)
    return str(path), seqs


def _empty_rows_models():
    from fastrnn.models import InputLayer

    return {
        "lstm": _built(fastrnn.LSTM(4), (1, 5, 3), 27),
        "gru_sequences": _built(fastrnn.GRU(3, return_sequences=True), (1, 5, 3), 28),
        "input_layer": fastrnn.Sequential([InputLayer(shape=(None, 3)),
                                           _built(fastrnn.SimpleRNN(2), (1, 5, 3), 29)]),
    }


@pytest.mark.parametrize("dtype_backend", [None, "pyarrow"])
@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("name", list(_empty_rows_models()))
def test_partition_of_empty_rows_gives_each_row_alone(tmp_path, name, fixed, dtype_backend):
    """A partition whose rows are all empty: the feature count comes from the
    column's type (fixed_size_list) or else from the model, not 1."""
    typ = pa.list_(pa.list_(pa.float32(), 3) if fixed else pa.list_(pa.float32()))
    path, seqs = _empty_rows_parquet(tmp_path, np.random.default_rng(30), typ)
    kwargs = {"dtype_backend": dtype_backend} if dtype_backend else {}
    ddf = dd.read_parquet(path, split_row_groups=True, **kwargs)
    assert ddf.npartitions == 2
    model = _empty_rows_models()[name]
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, ddf, "s").compute()
    assert len(got) == len(seqs)
    for i, s in enumerate(seqs):
        want = np.asarray(model(s[None]))[0]
        assert got.iloc[i].shape == want.shape
        np.testing.assert_allclose(got.iloc[i], want, rtol=1e-5, atol=1e-6)


def test_object_partition_of_empty_rows_takes_the_model_features():
    pd = pytest.importorskip("pandas")
    layer = _built(fastrnn.LSTM(3), (1, 5, 3), 31)
    rng = np.random.default_rng(32)
    rows = [rng.standard_normal((2, 3)).astype(np.float32), np.zeros((0, 3), np.float32),
            [], np.zeros((0, 3), np.float32)]
    lists = [rows[0].tolist(), [], [], []]  # a partition of [] only is list<null> to Arrow
    with dask.config.set({"dataframe.convert-string": False, "scheduler": "sync"}):
        for column in (rows, lists):
            ddf = dd.from_pandas(pd.DataFrame({"s": pd.Series(column, dtype=object)}),
                                 npartitions=2)
            got = fdask.predict_partitions(layer, ddf, "s").compute()
            for i, r in enumerate(rows):
                want = layer(np.asarray(r, np.float32).reshape(1, -1, 3))[0]
                np.testing.assert_allclose(got.iloc[i], want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not hasattr(fastrnn, "Sequential"), reason="no fastrnn.Sequential")
@pytest.mark.parametrize("first", ["Masking", "Dropout"])
def test_float64_model_behind_a_weightless_layer_pads_in_float64(tmp_path, first):
    """Masking and Dropout carry no weights and compute in no dtype of their
    own: the float64 LSTM after them decides the padding dtype."""
    from fastrnn import models

    rng = np.random.default_rng(33)
    seqs = [rng.standard_normal((n, 3)) for n in (3, 5, 2)]
    pq.write_table(pa.table({"s": pa.array([s.tolist() for s in seqs],
                                           pa.list_(pa.list_(pa.float64())))}),
                   tmp_path / "f.parquet")
    layer = fastrnn.LSTM(4, dtype="float64")
    layer.build((None, None, 3))
    rw = np.random.default_rng(34)
    layer.set_weights([rw.standard_normal(w.shape) * 0.5 for w in layer.get_weights()])
    model = fastrnn.Sequential([models.Masking(0.0) if first == "Masking" else
                                models.Dropout(0.1), layer])
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, dd.read_parquet(str(tmp_path / "f.parquet")),
                                       "s").compute()
    for i, s in enumerate(seqs):
        assert got.iloc[i].dtype == np.float64
        # float32 padding would differ by ~1e-8
        np.testing.assert_allclose(got.iloc[i], model(s[None])[0], rtol=1e-13, atol=1e-14)


# ------------------------------------------- the model as it is at the call

def _scale_weights(model, factor):
    model.set_weights([w * factor for w in model.get_weights()])


@pytest.mark.parametrize("where", ["sync", "threads", "in_process_cluster"])
def test_graph_runs_the_model_as_it_was_at_the_call(tmp_path, where):
    """Changing the model after predict / predict_partitions built the graph
    changes nothing in it, on every scheduler (a cluster of worker processes
    got a serialized copy at the call; threads and in-process workers a
    copy too)."""
    rng = np.random.default_rng(35)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    path, seqs = _empty_rows_parquet(tmp_path, rng, pa.list_(pa.list_(pa.float32())))
    lstm = _built(fastrnn.LSTM(4), (1, 5, 3), 36)
    quantized = _built(fastrnn.GRU(5), (1, 5, 3), 37)
    want_lstm, want_rows = lstm(x), [lstm(s[None])[0] for s in seqs]

    def build():
        y = fdask.predict(lstm, da.from_array(x, chunks=(3, 5, 3)))
        rows = fdask.predict_partitions(lstm, dd.read_parquet(path, split_row_groups=True), "s")
        q = fdask.predict(quantized, da.from_array(x, chunks=(3, 5, 3)))
        return y, rows, q

    def check(y, rows, q, compute):
        got_y, got_rows, got_q = compute(y), compute(rows), compute(q)
        np.testing.assert_allclose(got_y, want_lstm, rtol=1e-5, atol=1e-6)
        for i, want in enumerate(want_rows):
            np.testing.assert_allclose(got_rows.iloc[i], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_q, want_q, rtol=1e-5, atol=1e-6)

    quantized.quantize("int8")  # a quantized model is copied with its compact weights
    want_q = quantized(x)
    if where == "in_process_cluster":
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as c:
            graphs = build()
            _scale_weights(lstm, 2.0)
            _scale_weights(quantized, 0.5)
            check(*graphs, lambda collection: _compute(c, collection))
    else:
        with dask.config.set(scheduler=where):
            graphs = build()
            _scale_weights(lstm, 2.0)
            _scale_weights(quantized, 0.5)
            check(*graphs, lambda collection: collection.compute())
    assert not np.allclose(lstm(x), want_lstm)  # the model itself did change


def test_the_copy_at_the_call_is_one_copy_of_the_weights():
    tracemalloc = pytest.importorskip("tracemalloc")
    model = _big_lstm()
    size = _weight_bytes(model)
    x = da.zeros((10, 2, 1280), chunks=(1, 2, 1280), dtype=np.float32)
    with dask.config.set(scheduler="sync"):
        fdask.predict(model, x)  # imports and first-call caches, outside the count
        tracemalloc.start()
        try:
            y = fdask.predict(model, x)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert 0.9 * size < current and peak < 1.5 * size, (size, current, peak)
    del y


def test_stateful_and_uncopyable_models_are_named():
    import threading

    stateful = _built(fastrnn.LSTM(3, stateful=True), (2, 6, 3), 38)
    with pytest.raises(ValueError, match=r"^model: .*stateful=True"):
        fdask.predict(stateful, _guarded())
    with pytest.raises(ValueError, match=r"^model: .*stateful=True"):
        fdask.predict(fastrnn.Sequential([stateful]), _guarded())

    class Locked(_TwoLayers):
        def __init__(self, first, second):
            super().__init__(first, second)
            self.lock = threading.Lock()

    layer = _built(fastrnn.LSTM(3, return_sequences=True), (1, 6, 3), 39)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(TypeError, match=r"^model: Locked cannot be copied"):
            fdask.predict(Locked(layer, _built(fastrnn.GRU(2), (1, 6, 3), 40)), _guarded())


# ---------------------------------------------------- arguments, up front

def test_predict_partitions_refuses_a_series_and_a_list_of_columns(tmp_path):
    pq.write_table(pa.table({"s": pa.array([[[0.1, 0.2, 0.3]] * 2],
                                           pa.list_(pa.list_(pa.float32())))}),
                   tmp_path / "one.parquet")
    ddf = dd.read_parquet(str(tmp_path / "one.parquet"))
    layer = _built(fastrnn.LSTM(4), (1, 2, 3), 41)
    with pytest.raises(TypeError, match=r"^ddf: expected a dask.dataframe.DataFrame, got a "
                                        r"dask Series"):
        fdask.predict_partitions(layer, ddf["s"], "s")
    with pytest.raises(TypeError, match=r"^column: expected one column name, got a list"):
        fdask.predict_partitions(layer, ddf, ["s"])


def test_model_errors_in_the_probe_and_chunk_hints_for_numpy_x():
    """A model returning two arrays is the model's fault, not the input's; a
    NumPy x has no chunks of its own to rechunk lengths or a mask to."""
    bidi = _built(fastrnn.Bidirectional(fastrnn.LSTM(3), merge_mode=None), (1, 6, 3), 42)
    with pytest.raises(ValueError, match=r"^model: returned 2 arrays on a probe input") as info:
        fdask.predict(bidi, _guarded())
    assert "does not accept inputs" not in str(info.value)
    layer = _built(fastrnn.LSTM(3), (1, 6, 3), 43)
    x = np.random.default_rng(44).standard_normal((40, 6, 3)).astype(np.float32)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match=r"^lengths: chunks .*x is not a dask array.*"
                                             r"pass lengths as a NumPy array"):
            fdask.predict(layer, x, lengths=da.ones(40, chunks=20, dtype=int))
        with pytest.raises(ValueError, match=r"^mask: chunks .*x is not a dask array.*"
                                             r"pass mask as a NumPy array"):
            fdask.predict(layer, x, mask=da.ones((40, 6), chunks=(20, 6), dtype=bool))
        # a dask x keeps the hint in x's own chunks
        with pytest.raises(ValueError, match=r"use lengths.rechunk\(\(x.chunks\[0\],\)\)"):
            fdask.predict(layer, da.from_array(x, chunks=(10, 6, 3)),
                          lengths=da.ones(40, chunks=20, dtype=int))


# ------------------------------------------------------- plugin arguments

@pytest.mark.parametrize("nthreads", [0, -1, 1.5, True, "2"])
def test_plugin_refuses_nthreads_that_are_not_positive_integers(nthreads):
    with pytest.raises(ValueError, match=r"^nthreads: expected a positive integer or None"):
        fdask.FastrnnPlugin(nthreads=nthreads, warm=False)


def test_plugin_warms_its_dtypes_on_every_worker_as_documented(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    calls = []
    monkeypatch.setattr(fdask.dispatch, "warmup",
                        lambda **kw: calls.append(kw) or ["warmed"])
    monkeypatch.setattr(fdask, "_WORKER_INFO", {})
    saved = fdask._thread_state()
    try:
        for n in (1, 3):
            worker = SimpleNamespace(state=SimpleNamespace(nthreads=n), nthreads=n)
            asyncio.run(fdask.FastrnnPlugin(dtypes=("float64",)).setup(worker))
    finally:
        fdask._restore_thread_state(saved)
    assert calls == [{"dtypes": ("float64",), "parallel": False},
                     {"dtypes": ("float64",), "parallel": True}]
    doc = " ".join(fdask.FastrnnPlugin.__doc__.split())
    assert "the dtypes warmed on every worker, with the parallel kernels too" in doc
    assert fdask.FastrnnPlugin(nthreads=np.int64(2), warm=False).nthreads == 2

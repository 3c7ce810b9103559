"""fastrnn.dask and ``python -m fastrnn predict``: each row's outputs are the
model run on that row alone (go_backwards included), the graph holds the model
as it was at the call (functions and closures included), argument checks up
front, and a joined cluster left as it was found.

Expected values come from the plain in-memory call on each row alone. One
test starts a cluster (in this process, ``processes=False``) and one CLI
subprocess; the rest run on Dask's local schedulers.
"""

import functools
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

import fastrnn  # noqa: E402
from fastrnn import (GRU, LSTM, RNN, Bidirectional, GRUCell, LSTMCell,  # noqa: E402
                     SimpleRNN, dispatch)
from fastrnn import dask as fdask  # noqa: E402
from fastrnn.cli.predict import main as predict_main  # noqa: E402
from fastrnn.models import Dense, Embedding, Masking, TimeDistributed  # noqa: E402

TIMEOUT = 240
T, D = 7, 3


def _built(layer, seed, features=D):
    layer.build((1, T, features))
    # fresh, non-trivial weights (never the initializers' zeros or orthogonal)
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(w.dtype)
                       for w in layer.get_weights()])
    return layer


def _dense(units, inputs, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(units)
    layer.set_weights([(rng.standard_normal((inputs, units)) * 0.4).astype(np.float32),
                       (rng.standard_normal(units) * 0.4).astype(np.float32)])
    return layer


def _rows(rng, lengths, dtype=np.float32):
    return [rng.standard_normal((n, D)).astype(dtype) for n in lengths]


def _parquet(tmp_path, rows, typ):
    """Rows in partitions of 4 rows, each padded to its own longest row."""
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"s": pa.array([r.tolist() for r in rows], typ)}), path,
                   row_group_size=4)
    return dd.read_parquet(str(path), split_row_groups=True)


def _check_rows(got, rows, model, rtol=1e-5, atol=1e-6):
    assert len(got) == len(rows)
    for i, row in enumerate(rows):
        want = np.asarray(model(row[None]))[0]  # the model on that row alone
        assert got.iloc[i].shape == want.shape, (i, got.iloc[i].shape, want.shape)
        np.testing.assert_allclose(got.iloc[i], want, rtol=rtol, atol=atol, err_msg=f"row {i}")


# Row lengths: empty, one step, the longest, and odd ones between; each
# partition of 4 rows holds rows shorter than its longest.
LENGTHS = [5, 0, 7, 2, 1, 6, 3, 7, 4, 0, 3]


def _direction_models():
    """Models that run backwards somewhere (and their neighbours), by name."""
    return {
        "lstm_backwards": lambda: _built(LSTM(4, go_backwards=True, return_sequences=True), 1),
        "gru_backwards_reset_after_false": lambda: _built(
            GRU(3, go_backwards=True, reset_after=False, return_sequences=True), 2),
        "simple_rnn_backwards_zero_output_float64": lambda: _built(
            SimpleRNN(5, go_backwards=True, return_sequences=True, zero_output_for_mask=True,
                      dtype="float64"), 3),
        "stacked_cells_backwards": lambda: _built(
            RNN([LSTMCell(3), GRUCell(4)], go_backwards=True, return_sequences=True), 4),
        "bidirectional": lambda: _built(Bidirectional(GRU(3, return_sequences=True)), 5),
        "bidirectional_of_backwards": lambda: _built(
            Bidirectional(LSTM(3, go_backwards=True, return_sequences=True)), 6),
        "bidirectional_last_output": lambda: _built(Bidirectional(LSTM(3, go_backwards=True)),
                                                    7),
        "forward_zero_output_last_output": lambda: _built(LSTM(3, zero_output_for_mask=True),
                                                          8),
        "backwards_then_dense": lambda: fastrnn.Sequential([
            _built(LSTM(4, go_backwards=True, return_sequences=True), 9),
            TimeDistributed(_dense(2, 4, 10))]),
        "forward_then_backwards": lambda: fastrnn.Sequential([
            _built(GRU(4, return_sequences=True), 11),
            _built(LSTM(3, go_backwards=True, return_sequences=True), 12, features=4)]),
        "backwards_then_forward": lambda: fastrnn.Sequential([
            _built(LSTM(4, go_backwards=True, return_sequences=True), 13),
            _built(GRU(3, return_sequences=True), 14, features=4)]),
        "backwards_then_last_output": lambda: fastrnn.Sequential([
            _built(GRU(4, go_backwards=True, return_sequences=True), 15),
            _built(SimpleRNN(3), 16, features=4)]),
        "masking_then_backwards": lambda: fastrnn.Sequential([
            Masking(0.0), _built(SimpleRNN(4, go_backwards=True, return_sequences=True), 17)]),
        "closure_over_backwards": lambda: _closure(
            _built(LSTM(4, go_backwards=True, return_sequences=True), 18)),
    }


def _closure(layer):
    return lambda x, mask=None: layer(x, mask=mask)


# ------------------------------------------- each row as the model alone gives it

@pytest.mark.parametrize("batch_size", [None, 3])
@pytest.mark.parametrize("name", list(_direction_models()))
def test_partition_rows_equal_each_row_alone(tmp_path, rng, name, batch_size):
    """A go_backwards layer returns its steps in the order it ran them: for a
    row padded at the end its own outputs are the last ``length`` steps. Every
    kind of model, its rows cut where the row alone puts them."""
    model = _direction_models()[name]()
    float64 = "float64" in name
    rows = _rows(rng, LENGTHS, np.float64 if float64 else np.float32)
    typ = pa.list_(pa.list_(pa.float64() if float64 else pa.float32()))
    ddf = _parquet(tmp_path, rows, typ)
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, ddf, "s", batch_size=batch_size).compute()
    _check_rows(got, rows, model, *((1e-10, 1e-12) if float64 else (1e-5, 1e-6)))


def _scored_lists(tmp_path, model, rows, typ):
    """``rows`` (1-D arrays) as a Parquet list column of ``typ`` in partitions
    of 4 rows, scored by predict_partitions."""
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"s": pa.array([r.tolist() for r in rows], typ)}), path,
                   row_group_size=4)
    with dask.config.set(scheduler="sync"):
        return fdask.predict_partitions(model, dd.read_parquet(str(path), split_row_groups=True),
                                        "s").compute()


@pytest.mark.parametrize("mask_zero", [True, False])
def test_token_rows_equal_each_row_alone(tmp_path, rng, mask_zero):
    """Token ids padded with 0: masked by Embedding(mask_zero=True) (one padded
    call), run unpadded without it (the padding would be read as steps)."""
    emb = Embedding(9, 4, mask_zero=mask_zero)
    emb.set_weights([rng.standard_normal((9, 4)).astype(np.float32)])
    layer = LSTM(3, go_backwards=True, return_sequences=mask_zero)
    model = fastrnn.Sequential([emb, _built(layer, 19, features=4)])
    rows = [rng.integers(1, 9, n) for n in LENGTHS]
    got = _scored_lists(tmp_path, model, rows, pa.list_(pa.int64()))
    _check_rows(got, rows, model)


@pytest.mark.parametrize("name", ["lstm_backwards", "bidirectional_of_backwards",
                                  "backwards_then_dense", "forward_then_backwards",
                                  "masking_then_backwards"])
def test_layers_that_say_where_rows_lie_run_in_one_padded_call(tmp_path, rng, monkeypatch,
                                                               name):
    """fastrnn layers and Sequentials of them are not split by length."""
    def refuse(*args, **kwargs):
        raise AssertionError("rows ran length by length")

    monkeypatch.setattr(fdask, "_run_by_length", refuse, raising=False)
    model = _direction_models()[name]()
    rows = _rows(rng, LENGTHS)
    ddf = _parquet(tmp_path, rows, pa.list_(pa.list_(pa.float32())))
    with dask.config.set(scheduler="sync"):
        got = fdask.predict_partitions(model, ddf, "s").compute()
    _check_rows(got, rows, model)


def _token_model(rng, mask_zero, vocab=9):
    emb = Embedding(vocab, 4, mask_zero=mask_zero)
    emb.set_weights([rng.standard_normal((vocab, 4)).astype(np.float32)])
    return fastrnn.Sequential([emb, _built(GRU(3), 20, features=4)])


def test_float_token_ids_in_partitions_equal_each_row_alone(tmp_path, rng):
    """Token ids stored as floats (list<double>) for a model that starts with
    an Embedding are ids, as the model takes them row by row (they were
    read as one feature per step and refused)."""
    model = _token_model(rng, mask_zero=True)
    rows = [rng.integers(1, 9, n).astype(np.float64) for n in LENGTHS]
    got = _scored_lists(tmp_path, model, rows, pa.list_(pa.float64()))
    _check_rows(got, rows, model)


def test_integer_steps_for_a_one_feature_model_are_values(tmp_path, rng):
    """list<int64> rows for a model of one input feature (no Embedding) are
    one number per step, cast to the model's dtype, as list<list<int64>> is
    (they were taken as token ids and refused)."""
    model = fastrnn.Sequential([Masking(0.0), _built(LSTM(3), 21, features=1)])
    rows = [rng.integers(1, 6, n) for n in LENGTHS]
    got = _scored_lists(tmp_path, model, rows, pa.list_(pa.int64()))
    _check_rows(got, [r.astype(np.float32)[:, None] for r in rows], model)


def _padded_tokens(rng, lengths, pad):
    x = rng.integers(1, 9, (len(lengths), T))
    for i, n in enumerate(lengths):
        x[i, n:] = pad
    return x


@pytest.mark.parametrize("arg", ["lengths", "mask"])
def test_lengths_that_would_change_nothing_are_refused(rng, arg):
    """An Embedding without mask_zero passes no mask on, and a Masking after a
    layer that changes values makes its own: lengths or a mask given to
    predict would change nothing (each row ran over its padding, silently)."""
    lengths = np.array([7, 2, 5, 1])
    given = {arg: lengths if arg == "lengths" else np.arange(T)[None, :] < lengths[:, None]}
    x = _padded_tokens(rng, lengths, 0)
    with pytest.raises(ValueError, match=rf"^{arg}: .*Embedding .*mask_zero=False.*passes no "
                                         "mask on"):
        fdask.predict(_token_model(rng, mask_zero=False), x, **given)
    late = fastrnn.Sequential([TimeDistributed(_dense(D, D, 22)), Masking(0.0),
                               _built(LSTM(3), 23)])
    with pytest.raises(ValueError, match=rf"^{arg}: .*Masking .*replaces the one {arg} give"):
        fdask.predict(late, rng.standard_normal((4, T, D)).astype(np.float32), **given)


@pytest.mark.parametrize("first", ["embedding", "masking"])
def test_lengths_with_a_model_that_masks_its_own_padding(rng, first):
    """Embedding(mask_zero=True) and Masking make the mask from the inputs and
    replace the one lengths give: padded as they mask, each row is the model
    on that row alone; other values where lengths mask are refused, naming
    the row and step (they would run)."""
    lengths = np.array([7, 2, 5, 1, 3])
    if first == "embedding":
        model = _token_model(rng, mask_zero=True)
        x = _padded_tokens(rng, lengths, 0)
    else:
        model = fastrnn.Sequential([Masking(0.0), _built(GRU(3), 24)])
        x = rng.standard_normal((5, T, D)).astype(np.float32)
        for i, n in enumerate(lengths):
            x[i, n:] = 0
    with dask.config.set(scheduler="sync"):
        got = fdask.predict(model, x, lengths=lengths).compute()
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(got[i], model(x[i:i + 1, :n])[0], rtol=1e-5, atol=1e-6)
    x[3, 4] = 3 if first == "embedding" else 0.5  # a value past row 3's length (1)
    with dask.config.set(scheduler="sync"), \
            pytest.raises(ValueError, match=r"^lengths: row 3 has step 4 masked "
                                            r"by lengths but not by the model's"):
        fdask.predict(model, x, lengths=lengths).compute()
    # in a later chunk, the row's number in x
    x_chunked = da.from_array(x, chunks=(2, T) + x.shape[2:])
    with dask.config.set(scheduler="sync"), \
            pytest.raises(ValueError, match=r"^lengths: row 3 has step 4 masked"):
        fdask.predict(model, x_chunked, lengths=lengths).compute()


def test_cli_lengths_for_a_model_whose_embedding_drops_the_mask(tmp_path, rng, capsys):
    model = _token_model(rng, mask_zero=False)
    path = str(tmp_path / "model.fastrnn")
    fastrnn.save(model, path)
    np.save(tmp_path / "x.npy", _padded_tokens(rng, [4, 2, 3], 0))
    np.save(tmp_path / "lengths.npy", np.array([4, 2, 3]))
    rc = predict_main([path, str(tmp_path / "x.npy"), str(tmp_path / "y.zarr"), "--lengths",
                       str(tmp_path / "lengths.npy"), "--no-progress", "--workers", "0"])
    assert rc != 0
    assert "error: --lengths: the model's Embedding" in capsys.readouterr().err


def test_cli_names_the_row_of_the_input_that_would_run_its_padding(tmp_path, rng, capsys):
    model = fastrnn.Sequential([Masking(0.0), _built(GRU(3), 24)])
    path = str(tmp_path / "model.fastrnn")
    fastrnn.save(model, path)
    lengths = np.array([5, 2, 6, 3, 4])
    x = rng.standard_normal((5, T, D)).astype(np.float32)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    x[3, 5] = 0.5  # past row 3's length, in the second chunk of 2 rows
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lengths.npy", lengths)
    rc = predict_main([path, str(tmp_path / "x.npy"), str(tmp_path / "y.zarr"), "--lengths",
                       str(tmp_path / "lengths.npy"), "--no-progress", "--workers", "0",
                       "--chunk-rows", "2"])
    assert rc != 0
    assert "ValueError: --lengths: row 3 has step 5 masked by --lengths" in capsys.readouterr().err


def test_predict_reads_x_as_the_layers_do(rng):
    """A PyTorch tensor is its values; a MaskedArray with masked values is
    refused (its mask was dropped), as in a layer call."""
    torch = pytest.importorskip("torch")
    layer = _built(LSTM(3), 25)
    x = rng.standard_normal((4, T, D)).astype(np.float32)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(fdask.predict(layer, torch.tensor(x)).compute(), layer(x))
    masked = np.ma.masked_array(x, mask=x > 1)
    with pytest.raises(TypeError, match=r"^x: a numpy.ma.MaskedArray with masked values"):
        fdask.predict(layer, masked)
    with pytest.raises(TypeError, match=r"^mask: a numpy.ma.MaskedArray with masked values"):
        fdask.predict(layer, x, mask=np.ma.masked_array(np.ones((4, T), bool), mask=True))


# ------------------------------------------- the model as it is at the call

# Read by the module-level function below through this module's globals.
_GLOBAL_LAYER = None


def _module_function(x, mask=None):
    return _GLOBAL_LAYER(x, mask=mask)


def _scaled(layer, factor):
    layer.set_weights([w * factor for w in layer.get_weights()])


def _function_models(layer):
    """Plain functions and closures over ``layer``, by name."""
    def nested(x, mask=None):
        return layer(x, mask=mask)

    holder = {"layers": [layer]}
    return {
        "lambda": lambda x, mask=None: layer(x, mask=mask),
        "nested_function": nested,
        "closure_over_a_dict": lambda x, mask=None: holder["layers"][0](x, mask=mask),
        "partial_of_a_lambda": functools.partial(lambda x, mask=None, net=None: net(x, mask=mask),
                                                 net=layer),
    }


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("name", ["lambda", "nested_function", "closure_over_a_dict",
                                  "partial_of_a_lambda"])
def test_functions_run_with_the_layers_as_they_were_at_the_call(tmp_path, rng, scheduler, name):
    """copy.deepcopy gives a function back as itself, with the layers it closes
    over: the graph must not see set_weights or quantize made afterwards."""
    layer = _built(GRU(5, return_sequences=True), 30)
    model = _function_models(layer)[name]
    x = rng.standard_normal((9, T, D)).astype(np.float32)
    rows = _rows(rng, LENGTHS)
    want_x, want_rows = layer(x), [layer(r[None])[0] for r in rows]
    with dask.config.set(scheduler=scheduler):
        y = fdask.predict(model, da.from_array(x, chunks=(4, T, D)))
        got_rows = fdask.predict_partitions(
            model, _parquet(tmp_path, rows, pa.list_(pa.list_(pa.float32()))), "s")
        _scaled(layer, 2.0)
        layer.quantize("int8")
        np.testing.assert_allclose(y.compute(), want_x, rtol=1e-5, atol=1e-6)
        got_rows = got_rows.compute()
    for i, want in enumerate(want_rows):
        np.testing.assert_allclose(got_rows.iloc[i], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer(x), want_x)  # the layer itself did change


def test_function_reading_a_layer_from_its_module_globals_is_refused(rng):
    """A function importable by name pickles by reference: its module's layer
    would be neither copied nor sent to worker processes."""
    global _GLOBAL_LAYER
    _GLOBAL_LAYER = _built(LSTM(3), 31)
    x = rng.standard_normal((5, T, D)).astype(np.float32)
    try:
        with dask.config.set(scheduler="sync"):
            with pytest.raises(TypeError, match=r"^model: the copy made at the call still shares "
                                                r"layer .*function [\w.]*\._module_function is "
                                                r"pickled by reference"):
                fdask.predict(_module_function, x)
            # passed in, the same function's layer is copied
            model = functools.partial(lambda x, mask=None, net=None: net(x, mask=mask),
                                      net=_GLOBAL_LAYER)
            np.testing.assert_allclose(fdask.predict(model, x).compute(), _GLOBAL_LAYER(x),
                                       rtol=1e-5, atol=1e-6)
    finally:
        _GLOBAL_LAYER = None


def test_a_closure_that_cannot_be_pickled_is_named(rng):
    layer, lock = _built(LSTM(3), 32), threading.Lock()

    def guarded(x, mask=None):
        with lock:
            return layer(x, mask=mask)

    with dask.config.set(scheduler="sync"):
        with pytest.raises(TypeError, match=r"^model: function .*guarded cannot be copied: "
                                            r"cloudpickle failed"):
            fdask.predict(guarded, rng.standard_normal((4, T, D)).astype(np.float32))


class _Inner:
    def __init__(self, layer):
        self.layer = layer


class _Outer:
    """A user object holding a user object holding the layer."""

    def __init__(self, layer):
        self.inner = _Inner(layer)

    def __call__(self, x, mask=None):
        return self.inner.layer(x, mask=mask)


@pytest.mark.parametrize("flag", ["stateful", "time_major"])
@pytest.mark.parametrize("holder", ["closure", "user_object", "default_argument"])
def test_stateful_and_time_major_layers_inside_functions_and_objects_are_refused(flag, holder):
    if flag == "stateful":
        layer = LSTM(3, stateful=True, batch_size=4, name="inner")
        layer.build((4, T, D))
        want = r"^model: layer 'inner' is stateful=True"
    else:
        layer = LSTM(3, time_major=True, name="inner")
        layer.build((T, 1, D))
        want = r"^model: layer 'inner' is time_major=True"
    model = {"closure": lambda x, mask=None: layer(x, mask=mask),
             "user_object": _Outer(layer),
             "default_argument": lambda x, mask=None, net=layer: net(x, mask=mask)}[holder]
    x = np.zeros((8, T, D), np.float32)
    with pytest.raises(ValueError, match=want):
        fdask.predict(model, x)
    with pytest.raises(ValueError, match=want):
        fdask.predict_partitions(model, dd.from_pandas(pd.DataFrame({"s": [1]}),
                                                       npartitions=1), "s")


# ------------------------------------------------------- warmup dtypes, up front

def _plugin(dtypes):
    return fdask.FastrnnPlugin(warm=True, dtypes=dtypes)


def _warmup(dtypes):
    return dispatch.warmup(dtypes=dtypes, kinds=("lstm",))


@pytest.mark.parametrize("make", [_plugin, _warmup], ids=["FastrnnPlugin", "warmup"])
@pytest.mark.parametrize("dtypes, error", [
    (("int32",), ValueError), (("bfloat16",), ValueError), (("float16",), ValueError),
    (("float32", "complex64"), ValueError), ("int8", ValueError), ((None,), TypeError),
    (5, TypeError), ((1.5,), TypeError)])
def test_dtypes_other_than_float32_and_float64_are_refused_at_once(monkeypatch, make, dtypes,
                                                                  error):
    def never(*args, **kwargs):
        raise AssertionError("a kernel compiled before the error")

    monkeypatch.setattr(dispatch, "backend_module", never)
    with pytest.raises(error, match=r"^dtypes: expected dtype.* from \['float32', 'float64'\]"
                                    r".*, got "):
        make(dtypes)


def test_dtypes_given_alone_or_as_numpy_dtypes_are_one_dtype_each(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "backend_module", lambda name: SimpleNamespace(
        KINDS=("lstm",), warmup=lambda **kw: calls.append(kw["dtypes"]) or []))
    for given, want in [("float64", ("float64",)), (np.float32, ("float32",)),
                        ([np.dtype("f8"), "float32", "float64"], ("float64", "float32"))]:
        dispatch.warmup(dtypes=given)
        assert calls.pop() == want
        assert fdask.FastrnnPlugin(warm=False, dtypes=given).dtypes == want


# ------------------------------------------------------------------- the CLI

def _saved_lstm(folder, seed):
    layer = _built(LSTM(3), seed)
    path = str(folder / "model.fastrnn")
    fastrnn.save(layer, path)
    return layer, path


@pytest.mark.parametrize("workers", [["--workers", "0"], []])
def test_cli_empty_input_with_empty_lengths_writes_an_empty_output(tmp_path, capsys, workers):
    _, model = _saved_lstm(tmp_path, 40)
    np.save(tmp_path / "x.npy", np.zeros((0, T, D), np.float32))
    np.save(tmp_path / "lengths.npy", np.zeros((0,), np.int64))
    out = str(tmp_path / "y.zarr")
    rc = predict_main([model, str(tmp_path / "x.npy"), out, "--lengths",
                       str(tmp_path / "lengths.npy"), "--no-progress"] + workers)
    assert rc == 0, capsys.readouterr().err
    assert zarr.open_array(out, mode="r").shape == (0, 3)


@pytest.mark.parametrize("argv", [["--no-progress", "--example", "{d}"],
                                  ["--rows", "5", "--example={d}", "--no-progress"]])
def test_cli_example_anywhere_on_the_line(tmp_path, capsys, argv):
    d = str(tmp_path / "demo")
    argv = [a.format(d=d) for a in argv] + ["--time", "3", "--features", "2", "--units", "3",
                                            "--rows", "5"]
    assert predict_main(argv) == 0, capsys.readouterr().err
    assert sorted(os.listdir(d)) == ["lengths.npy", "model.fastrnn", "x.npy"]
    assert np.load(os.path.join(d, "x.npy")).shape == (5, 3, 2)


def test_cli_on_a_cluster_leaves_its_workers_thread_setting_as_it_was(tmp_path):
    """The CLI caps each worker's threads for its run and puts the setting
    back: read on the worker (in this process: processes=False) before and
    after a CLI process scored on it."""
    layer, model = _saved_lstm(tmp_path, 41)
    x = np.random.default_rng(42).standard_normal((13, T, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "y.zarr")
    saved = fdask._thread_state()
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      protocol="tcp", host="127.0.0.1",
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.run(fdask._set_process_threads, 3)  # the worker's own setting
            before = client.run(fdask.worker_info)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))]
                + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            done = subprocess.run(
                [sys.executable, "-m", "fastrnn", "predict", model, str(tmp_path / "x.npy"), out,
                 "--scheduler", cluster.scheduler_address, "--chunk-rows", "5",
                 "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT, env=env)
            assert done.returncode == 0, done.stderr
            after = client.run(fdask.worker_info)
        assert [w["task_threads"] for w in before.values()] == [3]
        assert after == before
        np.testing.assert_allclose(zarr.open_array(out, mode="r")[...], layer(x),
                                   rtol=1e-5, atol=1e-6)
    finally:
        fdask._restore_thread_state(saved)

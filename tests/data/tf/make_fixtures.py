"""Write the TensorFlow fixtures of tests/test_tf_checkpoint.py (needs TensorFlow).

Run once, in an environment with TensorFlow 2.x and tf_keras (Keras 2)::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow tf_keras
    /tmp/tfenv/bin/python tests/data/tf/make_fixtures.py

Each fixture is a directory here holding what TensorFlow wrote (a TF1
``Saver`` checkpoint, a Keras 2 SavedModel, or a Keras 2 ``save_weights``
checkpoint with the model's JSON) and ``expected.npz``: a JSON ``config``
saying what was built, the input ``x`` (and ``lengths`` for TF1), and the
outputs TensorFlow computed, ``y0``, ``y1``, ... (TF1: the outputs, then
each state array flattened, ``LSTMStateTuple`` as ``(c, h)``). Weights are
random, uniform in [-0.6, 0.6]; inputs random normal. The tests read these
files without TensorFlow.

SavedModels are written with ``save_traces=False``: their ``saved_model.pb``
then holds no traced functions (a few kilobytes instead of megabytes); the
variables and ``keras_metadata.pb``, which are what fastrnn reads, are the
same as with the default.
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
v1 = tf.compat.v1


def _fresh(name):
    path = os.path.join(HERE, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _save_expected(path, config, arrays):
    config = dict(config, tensorflow=tf.__version__)
    np.savez(os.path.join(path, "expected.npz"), config=json.dumps(config), **arrays)


def _flat(state):
    return [np.asarray(s) for s in tf.nest.flatten(state)]


# ----------------------------------------------------------------------------- TF1


def _make_cell(spec, dtype):
    spec = dict(spec)
    cls = spec.pop("class")
    if cls == "MultiRNNCell":
        return v1.nn.rnn_cell.MultiRNNCell([_make_cell(c, dtype) for c in spec["cells"]])
    return getattr(v1.nn.rnn_cell, cls)(dtype=dtype, **spec)


def _randomise(sess, rng):
    for v in v1.global_variables():
        shape = v.shape.as_list()
        value = rng.uniform(-0.6, 0.6, shape)
        v.load(value.astype(v.dtype.base_dtype.as_numpy_dtype), sess)


def tf1_case(name, kind, cells, *, scopes=None, dtype="float32", batch=4, time=6, depth=3,
             sharded=False, partitioned=False, seed=0):
    """One TF1 model run by dynamic_rnn (``kind``: "dynamic", "bidirectional",
    "stacked" = one dynamic_rnn per cell, each in its own scope and device)."""
    rng = np.random.default_rng(seed)
    path = _fresh(name)
    tf_dtype = tf.as_dtype(dtype)
    x = rng.standard_normal((batch, time, depth)).astype(dtype)
    lengths = rng.integers(1, time + 1, batch)
    lengths[0] = time
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(tf_dtype, [None, time, depth])
        lp = v1.placeholder(tf.int32, [None])
        if kind == "dynamic":
            # "outer/inner": dynamic_rnn(scope=inner) inside variable_scope(outer)
            outer, _, inner = scopes[0].rpartition("/")
            partitioner = v1.fixed_size_partitioner(2) if partitioned else None
            with v1.variable_scope(outer or v1.get_variable_scope(), partitioner=partitioner):
                cell = _make_cell(cells[0], tf_dtype)
                out, state = v1.nn.dynamic_rnn(cell, xp, sequence_length=lp, dtype=tf_dtype,
                                               scope=inner)
            fetch = [out] + tf.nest.flatten(state)
        elif kind == "bidirectional":
            fw, bw = _make_cell(cells[0], tf_dtype), _make_cell(cells[1], tf_dtype)
            (ofw, obw), (sfw, sbw) = v1.nn.bidirectional_dynamic_rnn(
                fw, bw, xp, sequence_length=lp, dtype=tf_dtype)
            fetch = [ofw, obw] + tf.nest.flatten(sfw) + tf.nest.flatten(sbw)
        elif kind == "stacked":
            h, fetch = xp, []
            for i, (spec, scope) in enumerate(zip(cells, scopes)):
                with tf.device(f"/cpu:{i % 2}"):
                    h, state = v1.nn.dynamic_rnn(_make_cell(spec, tf_dtype), h,
                                                 sequence_length=lp, dtype=tf_dtype, scope=scope)
                fetch += tf.nest.flatten(state)
            fetch = [h] + fetch
        variables = [v.name for v in v1.global_variables()]
        saver = v1.train.Saver(sharded=sharded, save_relative_paths=True)
        session_config = v1.ConfigProto(device_count={"CPU": 2})
        with v1.Session(config=session_config) as sess:
            sess.run(v1.global_variables_initializer())
            _randomise(sess, rng)
            ys = sess.run(fetch, {xp: x, lp: lengths})
            saver.save(sess, os.path.join(path, "model.ckpt"), write_meta_graph=False)
    config = {"kind": "tf1", "call": kind, "cells": cells, "scopes": scopes, "dtype": dtype,
              "variables": variables, "sharded": sharded, "partitioned": partitioned}
    _save_expected(path, config, {"x": x, "lengths": lengths,
                                  **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)}})


def tf1_dtypes(name="tf1_dtypes", seed=1):
    """Variables of every dtype the reader handles, and a partitioned one."""
    rng = np.random.default_rng(seed)
    path = _fresh(name)
    graph = tf.Graph()
    with graph.as_default():
        values = {
            "bf16": (tf.bfloat16, rng.standard_normal((3, 5))),
            "f16": (tf.float16, rng.standard_normal((4,))),
            "f64": (tf.float64, rng.standard_normal((2, 3))),
            "i32": (tf.int32, rng.integers(-1000, 1000, (5,))),
            "i64": (tf.int64, rng.integers(-2**40, 2**40, (2, 2))),
            "u8": (tf.uint8, rng.integers(0, 256, (6,))),
            "flag": (tf.bool, rng.integers(0, 2, (3,)).astype(bool)),
            "scalar": (tf.float32, rng.standard_normal(())),
        }
        for key, (dt, value) in values.items():
            v1.get_variable(f"scope/{key}", initializer=tf.constant(value, dtype=dt))
        v1.get_variable("scope/partitioned", shape=(7, 3), dtype=tf.float32,
                        partitioner=v1.fixed_size_partitioner(3),
                        initializer=v1.random_uniform_initializer(-0.6, 0.6, seed=seed))
        saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, os.path.join(path, "model.ckpt"), write_meta_graph=False)
    reader = tf.train.load_checkpoint(os.path.join(path, "model.ckpt"))
    arrays, dtypes = {}, {}
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        dtypes[key] = reader.get_variable_to_dtype_map()[key].name
        arrays["v:" + key] = value.astype(np.float32) if dtypes[key] == "bfloat16" else value
    _save_expected(path, {"kind": "dtypes", "dtypes": dtypes}, arrays)


def tf1_keras_layer(name="tf1_keras_lstm", seed=2):
    """A tf.keras LSTM layer in a TF1 graph, saved by a Saver (names lstm/lstm_cell/...)."""
    import tf_keras

    rng = np.random.default_rng(seed)
    path = _fresh(name)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(tf.float32, [None, 5, 4])
        y = tf_keras.layers.LSTM(6, return_sequences=True)(xp)
        variables = [v.name for v in v1.global_variables()]
        saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            _randomise(sess, rng)
            out = sess.run(y, {xp: x})
            saver.save(sess, os.path.join(path, "model.ckpt"), write_meta_graph=False)
    _save_expected(path, {"kind": "tf1_keras", "variables": variables}, {"x": x, "y0": out})


# ------------------------------------------------------------------------- Keras 2


def _keras_inputs(rng, kind, batch, time, depth, vocab):
    if kind == "tokens":
        x = rng.integers(1, vocab, (batch, time))
        for b in range(1, batch):
            x[b, rng.integers(1, time):] = 0  # padding, masked by mask_zero
        return x.astype(np.int32)
    x = rng.standard_normal((batch, time, depth)).astype(np.float32)
    if kind == "masked":
        for b in range(1, batch):
            x[b, rng.integers(1, time):] = 0.0  # steps Masking skips
    return x


def _keras2_model(name, build, seed, time, depth, vocab):
    """``(tf_keras, rng, path, model)``: fixture ``name``'s folder made empty,
    and ``build``'s model with random weights (uniform in [-0.6, 0.6])."""
    import tf_keras

    rng = np.random.default_rng(seed)
    path = _fresh(name)
    tf_keras.utils.set_random_seed(seed)
    model = build(tf_keras, time, depth, vocab)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return tf_keras, rng, path, model


def keras2_case(name, build, *, inputs="dense", batch=4, time=7, depth=3, vocab=12,
                save="saved_model", seed=3):
    tf_keras, rng, path, model = _keras2_model(name, build, seed, time, depth, vocab)
    x = _keras_inputs(rng, inputs, batch, time, depth, vocab)
    y = model.predict(x, verbose=0)
    if save == "saved_model":
        model.save(path, save_format="tf", save_traces=False)
    else:
        model.save_weights(os.path.join(path, "ckpt"), save_format="tf")
        with open(os.path.join(path, "model.json"), "w") as f:
            f.write(model.to_json())
    _save_expected(path, {"kind": "keras2", "save": save, "keras": tf_keras.__version__},
                   {"x": x, "y0": y})


def _bidirectional_masking(k, time, depth, vocab):
    return k.Sequential([
        k.layers.Masking(0.0, input_shape=(time, depth)),
        k.layers.Bidirectional(k.layers.LSTM(5, return_sequences=True)),
        k.layers.TimeDistributed(k.layers.Dense(2)),
    ])


def _gru_functional(k, time, depth, vocab):
    inp = k.Input((time, depth))
    h = k.layers.GRU(5, return_sequences=True, reset_after=True)(inp)
    h = k.layers.GRU(3, reset_after=False)(h)
    out = k.layers.Dense(2, activation="tanh")(h)
    return k.Model(inp, out)


def _embedding_simple_rnn(k, time, depth, vocab):
    return k.Sequential([
        k.Input((time,), dtype="int32"),
        k.layers.Embedding(vocab, 4, mask_zero=True),
        k.layers.SimpleRNN(6),
        k.layers.Dropout(0.3),
        k.layers.Dense(3, activation="softmax"),
    ])


def _stacked_cells(k, time, depth, vocab):
    inp = k.Input((time, depth))
    h = k.layers.RNN([k.layers.LSTMCell(4), k.layers.GRUCell(3)], return_sequences=True)(inp)
    h = k.layers.Activation("relu")(h)
    out = k.layers.Bidirectional(k.layers.GRU(2, reset_after=False), merge_mode="sum")(h)
    return k.Model(inp, out)


def _bidirectional_first(k, time, depth, vocab):
    """A Bidirectional first, given the input shape: Keras 2 writes it on the wrapper."""
    return k.Sequential([
        k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True),
                               input_shape=(time, depth)),
        k.layers.TimeDistributed(k.layers.Dense(2)),
    ])


def _cudnn(k, time, depth, vocab):
    cudnn = tf.compat.v1.keras.layers
    return k.Sequential([
        k.layers.InputLayer(input_shape=(time, depth)),
        k.layers.Bidirectional(cudnn.CuDNNLSTM(5, return_sequences=True)),
        cudnn.CuDNNGRU(4),
    ])


def _cudnn_on_cpu(k, time, depth, vocab):
    """What tf_keras loads a CuDNN model's weights into to run it on a CPU."""
    return k.Sequential([
        k.layers.InputLayer(input_shape=(time, depth)),
        k.layers.Bidirectional(k.layers.LSTM(5, return_sequences=True,
                                             recurrent_activation="sigmoid")),
        k.layers.GRU(4, reset_after=True, recurrent_activation="sigmoid"),
    ])


def keras2_cudnn(name="keras2_cudnn", batch=4, time=7, depth=3, seed=15):
    """CuDNNLSTM / CuDNNGRU (they build without a GPU, but run only on one):
    the model saved as a SavedModel, as a legacy ``model.h5``, and with
    ``save_weights`` (TF format, ``ckpt``, and HDF5, ``weights.h5``) beside
    ``model.json``; the
    expected outputs are tf_keras's own CPU twin of it (LSTM and
    GRU(reset_after=True) with sigmoid gates), given the CuDNN weights by
    ``load_weights`` of an ``.h5``, which converts them (its
    ``_convert_rnn_weights``: per-gate kernel layouts, LSTM's two biases
    summed, GRU's reshaped)."""
    tf_keras, rng, path, model = _keras2_model(name, _cudnn, seed, time, depth, None)
    model.save(path, save_format="tf", save_traces=False)
    model.save(os.path.join(path, "model.h5"))
    model.save_weights(os.path.join(path, "ckpt"), save_format="tf")
    with open(os.path.join(path, "model.json"), "w") as f:
        f.write(model.to_json())
    weights = os.path.join(path, "weights.h5")
    model.save_weights(weights)
    twin = _cudnn_on_cpu(tf_keras, time, depth, None)
    twin.load_weights(weights)
    x = _keras_inputs(rng, "dense", batch, time, depth, None)
    y = twin.predict(x, verbose=0)
    _save_expected(path, {"kind": "keras2", "save": "saved_model", "keras": tf_keras.__version__,
                          "h5": "model.h5"}, {"x": x, "y0": y})


def main():
    lstm = {"class": "BasicLSTMCell", "num_units": 5}
    peep = {"class": "LSTMCell", "num_units": 7, "use_peepholes": True, "num_proj": 4,
            "cell_clip": 1.5, "proj_clip": 0.8}
    gru = {"class": "GRUCell", "num_units": 5}
    tf1_case("tf1_basic_lstm", "dynamic", [lstm], scopes=["rnn"])
    tf1_case("tf1_lstm_peep_proj", "dynamic", [peep], scopes=["rnn"], seed=4)
    tf1_case("tf1_gru", "dynamic", [gru], scopes=["rnn"], seed=5)
    tf1_case("tf1_multi", "dynamic",
             [{"class": "MultiRNNCell", "cells": [{"class": "LSTMCell", "num_units": 6}, gru]}],
             scopes=["rnn"], seed=6)
    tf1_case("tf1_bidirectional", "bidirectional",
             [lstm, {"class": "GRUCell", "num_units": 4}],
             scopes=["bidirectional_rnn/fw", "bidirectional_rnn/bw"], seed=7)
    tf1_case("tf1_sharded", "stacked", [{"class": "LSTMCell", "num_units": 5},
                                        {"class": "GRUCell", "num_units": 4}],
             scopes=["layer1", "layer2"], sharded=True, seed=8)
    tf1_case("tf1_float64", "dynamic", [{"class": "LSTMCell", "num_units": 6,
                                         "use_peepholes": True}],
             scopes=["rnn"], dtype="float64", seed=9)
    tf1_case("tf1_partitioned", "dynamic", [{"class": "LSTMCell", "num_units": 5}],
             scopes=["encoder/rnn"], partitioned=True, seed=10)
    tf1_dtypes()
    tf1_keras_layer()
    keras2_case("keras2_bidirectional_masking", _bidirectional_masking, inputs="masked")
    keras2_case("keras2_gru_functional", _gru_functional, seed=11)
    keras2_case("keras2_embedding_simplernn", _embedding_simple_rnn, inputs="tokens", seed=12)
    keras2_case("keras2_stacked_cells", _stacked_cells, seed=13)
    keras2_case("keras2_save_weights", _gru_functional, save="weights", seed=14)
    keras2_cudnn()
    keras2_case("keras2_bidirectional_first", _bidirectional_first, seed=16)


# Fixtures that can be written again alone: make_fixtures.py NAME ...
ALONE = {"keras2_cudnn": keras2_cudnn,
         "keras2_bidirectional_first": lambda: keras2_case(
             "keras2_bidirectional_first", _bidirectional_first, seed=16)}

if __name__ == "__main__" and sys.argv[1:]:
    for fixture in sys.argv[1:]:
        ALONE[fixture]()
    sys.exit()


if __name__ == "__main__":
    main()

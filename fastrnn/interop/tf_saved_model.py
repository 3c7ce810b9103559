"""Keras 2 models saved the TensorFlow way, read without TensorFlow or Keras.

Two forms, both tensor bundles (read by :mod:`fastrnn._tf_bundle`):

* a **SavedModel directory** written by Keras 2 (``tf.keras`` before Keras 3,
  or ``tf_keras``) ``model.save("dir")``: ``saved_model.pb``,
  ``keras_metadata.pb`` (each Keras object's config as JSON inside a small
  protobuf; the root's holds the model config) and
  ``variables/variables.{index,data-*}``;
* a Keras 2 ``model.save_weights("ckpt")`` checkpoint in the TF format
  (``ckpt.index``, ``ckpt.data-*``, a ``checkpoint`` file), with the model's
  config passed separately (``config=``, as for a ``.weights.h5`` file).

The variables of both are found through the checkpoint's object graph (the
``_CHECKPOINTABLE_OBJECT_GRAPH`` tensor, a ``TrackableObjectGraph``): from
the model, Keras 2 names the i-th entry of ``model.layers`` ``layer-i``
(Sequential models do not count their ``InputLayer``; functional models
do), a recurrent layer its cell ``cell``, stacked cells ``cell/cells/<k>``,
a Bidirectional its ``forward_layer`` and ``backward_layer``, a
TimeDistributed its ``layer``; a cell or a Dense layer its ``kernel``,
``recurrent_kernel`` and ``bias``, an Embedding its ``embeddings``. The
checkpoint keys themselves are not relied on (a SavedModel's are
``variables/<n>/...``, a ``save_weights`` checkpoint's are paths).

A SavedModel without ``keras_metadata.pb`` (a ``tf.Module`` exported with
``tf.saved_model.save``, or Keras 3's ``model.export``) holds no Keras
config to rebuild from, and is refused saying so.
"""

from __future__ import annotations

import os

from .. import _safe_io, activations
from .._tf_bundle import BundleReader, message, messages, number, parse_message

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_MAX_METADATA = 64 * 1024 * 1024
_RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN")


def is_tf_format(path):
    """True for a SavedModel directory or a TensorFlow checkpoint (prefix,
    ``.index`` file, or a directory with a ``checkpoint`` file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n))
                   for n in ("saved_model.pb", "saved_model.pbtxt", "checkpoint"))
    return path.endswith(".index") or os.path.isfile(path + ".index")


def _saved_model_config(path):
    """The model config in a SavedModel's ``keras_metadata.pb``."""
    meta_path = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(meta_path):
        found = sorted(os.listdir(path))
        raise ValueError(
            f"{path}: a SavedModel without keras_metadata.pb (found {found}): it was not "
            "written by Keras 2 model.save (a tf.Module exported with tf.saved_model.save, "
            "or Keras 3 model.export), so it holds no Keras layer configs to rebuild the "
            "model from")
    if os.path.getsize(meta_path) > _MAX_METADATA:
        raise ValueError(f"{meta_path}: implausibly large ({os.path.getsize(meta_path)} bytes)")
    with open(meta_path, "rb") as f:
        nodes = messages(parse_message(f.read(), meta_path), 1, meta_path)
    for node in nodes:
        fields = parse_message(node, meta_path)
        if message(fields, 3, meta_path) == b"root":
            meta = _safe_io.load_json(message(fields, 5, meta_path, b"{}"), meta_path,
                                      "the model's metadata")
            if not isinstance(meta, dict):
                raise ValueError(f"{meta_path}: the model's metadata: expected a JSON object, "
                                 f"got {type(meta).__name__} {repr(meta)[:60]}")
            config = meta.get("model_config") or {
                "class_name": meta.get("class_name"), "config": meta.get("config")}
            if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
                raise ValueError(f"{meta_path}: the root object ({meta.get('class_name')!r}) "
                                 "has no model config (a subclassed model?)")
            return config
    raise ValueError(f"{meta_path}: no root object")


class _ObjectGraph:
    """The ``TrackableObjectGraph`` of a checkpoint: children and variables by name."""

    def __init__(self, reader):
        if _OBJECT_GRAPH not in reader:
            raise ValueError(
                f"{reader.prefix}: a name-based checkpoint without an object graph (TF1 "
                "Saver?): read its variables with fastrnn.nn.load_checkpoint, or load them "
                "into fastrnn.nn cells with cell.load_checkpoint(path, scope=...)")
        blob = reader.read(_OBJECT_GRAPH)
        where = f"{reader.prefix}: object graph"
        if blob.shape != () or not isinstance(blob[()], bytes):
            raise ValueError(f"{where}: expected one serialised TrackableObjectGraph")
        self.reader = reader
        self._read = {}  # checkpoint key -> the path of the weight read from it
        self.children, self.variables = [], []
        for node in messages(parse_message(blob[()], where), 1, where):
            fields = parse_message(node, where)
            kids = {}
            for ref in messages(fields, 1, where):
                r = parse_message(ref, where)
                kids[message(r, 2, where).decode("utf-8", "replace")] = number(r, 1, where)
            keys = {}
            for attr in messages(fields, 2, where):
                a = parse_message(attr, where)
                keys[message(a, 1, where).decode("utf-8", "replace")] = \
                    message(a, 3, where).decode("utf-8", "replace")
            self.children.append(kids)
            self.variables.append(keys.get("VARIABLE_VALUE"))
        if not self.children:
            raise ValueError(f"{where}: empty")

    def find(self, path, optional=False):
        """The node at a ``/``-separated path of child names from the root."""
        node = 0
        for i, name in enumerate(path.split("/")):
            kids = self.children[node]
            if name not in kids:
                if optional:
                    return None
                at = "/".join(path.split("/")[:i]) or "the model"
                raise ValueError(f"{self.reader.prefix}: {at} has no tracked object {name!r} "
                                 f"(it has {sorted(kids)[:20]})")
            node = kids[name]
            if not 0 <= node < len(self.children):
                raise ValueError(f"{self.reader.prefix}: object graph refers to node {node}, "
                                 f"which does not exist")
        return node

    def variable(self, path, optional=False):
        node = self.find(path, optional)
        if node is None:
            return None
        key = self.variables[node]
        if key is None:
            if optional:
                return None
            raise ValueError(f"{self.reader.prefix}: {path} is not a variable")
        if key not in self.reader:
            raise self.reader.missing(key, f"variable for {path}:")
        # Each weight of a Keras model is a variable of its own; a graph that
        # points two weights at one value would have the file's bytes read,
        # and held, once per weight.
        first = self._read.setdefault(key, path)
        if first != path:
            raise ValueError(f"{self.reader.prefix}: {first} and {path} are one checkpoint "
                             f"value ({key!r}); the layers of a model converted here each "
                             "have their own weights")
        return self.reader.read(key)


def _cell_paths(cell):
    """Variable paths, relative to a cell object, for a cell config."""
    if isinstance(cell, list):
        cell = {"class_name": "StackedRNNCells", "config": {"cells": cell}}
    if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        return [f"cells/{i}/{p}" for i, c in enumerate(cell["config"]["cells"])
                for p in _cell_paths(c)]
    return ["kernel", "recurrent_kernel", "bias?"]


def _layer_paths(entry):
    """Variable paths, relative to the layer object, in Keras ``get_weights`` order.

    A trailing ``?`` marks a variable that is absent when the layer has none
    (``use_bias=False``).
    """
    cls = entry.get("class_name")
    cfg = entry.get("config") or {}
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        return ["cell/" + p for p in _cell_paths(None)]
    if cls in ("CuDNNLSTM", "CuDNNGRU"):  # (no cell: the layer holds its weights)
        return ["kernel", "recurrent_kernel", "bias"]
    if cls == "RNN":
        return ["cell/" + p for p in _cell_paths(cfg.get("cell"))]
    if cls == "Bidirectional":
        backward = cfg.get("backward_layer") or cfg.get("layer") or {}
        return ([f"forward_layer/{p}" for p in _layer_paths(cfg.get("layer") or {})]
                + [f"backward_layer/{p}" for p in _layer_paths(backward)])
    if cls == "TimeDistributed":
        return ["layer/" + p for p in _layer_paths(cfg.get("layer") or {})]
    if cls == "Dense":
        return ["kernel", "bias?"]
    if cls == "Embedding":
        return ["embeddings"]
    return []


def _untuple(obj):
    """Keras 2's JSON for tuples, ``{"class_name": "__tuple__", "items": [...]}``, as lists."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__tuple__" and isinstance(obj.get("items"), list):
            return [_untuple(v) for v in obj["items"]]
        return {k: _untuple(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untuple(v) for v in obj]
    return obj


def _is_hard_sigmoid(value):
    """``value`` names keras.activations' ``hard_sigmoid``, by name or serialised."""
    if isinstance(value, dict) and value.get("class_name") == "function" \
            and value.get("module") in activations._ACTIVATION_MODULES:
        value = value.get("config")
    return isinstance(value, str) and value.lower() == "hard_sigmoid"


def keras2_activations(config):
    """A copy of a Keras 2 model config in which ``hard_sigmoid`` keeps Keras 2's meaning.

    Keras 2 defined ``hard_sigmoid`` as ``clip(0.2 x + 0.5, 0, 1)``, Keras 3 (whose
    names fastrnn follows) as ``clip(x / 6 + 0.5, 0, 1)``. Every layer's or cell's
    ``activation`` / ``recurrent_activation`` ``"hard_sigmoid"`` (recurrent layers,
    ``Dense``, ``Activation``, nested ones too) becomes ``"keras2_hard_sigmoid"``
    (:data:`fastrnn.activations.EXTRA_CODES`: every backend runs it, and ``get_config``
    and ``fastrnn.save`` keep the name).
    """
    if isinstance(config, list):
        return [keras2_activations(v) for v in config]
    if not isinstance(config, dict):
        return config
    out = {k: keras2_activations(v) for k, v in config.items()}
    cls, inner = out.get("class_name"), out.get("config")
    if not isinstance(cls, str) or not isinstance(inner, dict):
        return out
    for key in ("activation", "recurrent_activation"):
        if _is_hard_sigmoid(inner.get(key)):
            inner[key] = "keras2_hard_sigmoid"
    return out


def _model_layers(model_config):
    """The config entries in ``model.layers`` order (what ``layer-<i>`` counts)."""
    cls = model_config.get("class_name")
    layers = list((model_config.get("config") or {}).get("layers") or [])
    if cls == "Sequential":
        return [e for e in layers if e.get("class_name") != "InputLayer"]
    return layers


def read_keras2(path, config=None, check=None):
    """The model config and a weight reader for a Keras 2 SavedModel or TF checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        A SavedModel directory, or a ``save_weights`` checkpoint (prefix,
        ``.index`` file, or its directory).
    config : dict, optional
        The model config (``{"class_name", "config"}``); required for a
        checkpoint, and overrides a SavedModel's own.
    check : callable, optional
        Called with the config before it is used; raises ``ValueError`` for
        a config that is not a serialised model of the form the converter
        takes (:func:`fastrnn.interop.keras_file.model_chain`, which the
        caller passes: that module imports this one).

    Returns
    -------
    (dict, callable)
        The model config (its ``hard_sigmoid`` Keras 2's: see
        :func:`keras2_activations`) and ``weights_of(entry, group_name, layer)`` returning a
        layer entry's weights in Keras order, as
        :func:`fastrnn.interop.keras_file.build_model` takes them.
    """
    path = os.fspath(path)
    saved_model = os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt"))
    if saved_model:
        own = _saved_model_config(path)
        config = own if config is None else config
    elif config is None:
        raise ValueError(f"{path}: a TensorFlow checkpoint holds weights only; pass config= "
                         "(model.to_json(), or the model's config dict or .json file)")
    config = _untuple(config)
    if check is not None:
        check(config)  # a config that is not a serialised model is refused here
    config = keras2_activations(config)  # (Keras 2 wrote these files)
    graph = _ObjectGraph(BundleReader(path))
    entries = _model_layers(config)
    tracked = sorted(k for k in graph.children[0] if k.startswith("layer-"))
    if len(tracked) != len(entries):
        raise ValueError(f"{graph.reader.prefix}: the checkpoint tracks {len(tracked)} layers "
                         f"(layer-0 ...), the config has {len(entries)}: not this model's "
                         "weights?")
    where = {e.get("name") or (e.get("config") or {}).get("name"): f"layer-{i}"
             for i, e in enumerate(entries)}

    def weights_of(entry, _group, _layer):
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        if name not in where:
            return []
        weights = []
        for p in _layer_paths(entry):
            optional = p.endswith("?")
            value = graph.variable(f"{where[name]}/{p.rstrip('?')}", optional)
            if value is not None:
                weights.append(value)
        return weights

    return config, weights_of

"""Read Keras 3 model files without Keras or TensorFlow (h5py only).

``load_keras(path)`` accepts:

* a ``.keras`` file: a zip holding ``config.json`` (the model's
  ``{"class_name", "config"}``) and ``model.weights.h5``;
* a ``.weights.h5`` file (``model.save_weights``) together with
  ``config=`` (the dict from ``model.get_config()`` wrapped as
  ``{"class_name", "config"}``, the JSON string ``model.to_json()`` gives,
  or the path of a ``.json`` file or of a ``.keras`` file holding it);
* a legacy ``.h5`` model (``model.save("m.h5")``): the config is read from
  the file's ``model_config`` attribute, unless ``config=`` is given (as for
  a ``.keras`` file, it then replaces the file's own);
* Keras 2's ``model.save_weights("w.h5")`` together with ``config=``: a
  group per layer name at the file's root, as under a legacy file's
  ``model_weights``.

Layout of ``model.weights.h5`` that Keras 3 writes (learnt from files Keras
3.15 wrote): one group per layer under ``layers/``, named after the layer's
*class* in snake case, made unique by a counter in the order of
``model.layers`` (``dense``, ``dense_1``, ...; never the layer's own name).
A layer's variables are the datasets ``vars/0``, ``vars/1``, ... in
``layer.weights`` order. Nested objects get sub-groups by attribute:
``<rnn>/cell/vars``, ``<rnn>/cell/cells/<cell class>[_k]/vars`` (stacked
cells), ``<bidirectional>/forward_layer/...`` and ``/backward_layer/...``,
``<time_distributed>/layer/vars``. Functional models list their
``InputLayer`` in ``model.layers`` (and so in the naming); Sequential models
do not; Keras operations recorded in a functional config (the ``NotEqual``
and ``Any`` that compute a ``Masking`` mask) have no group.

The model must be a linear chain (Sequential, or a functional model with
one input, one output and one tensor flowing from layer to layer, each
layer reading the first output of the one before: a recurrent layer's
sequence or last output, never a state it returns with
``return_state=True``) of the layers :mod:`fastrnn.models` supports;
anything else is a ``ValueError`` naming the layer. Masks are recomputed
with Keras's propagation rules, not read from the recorded graph; a layer's
recorded ``mask=`` must be the mask Keras propagated itself (Keras 3 records
it as one a user passes), else it is refused. A layer or cell of a user's
class registered with Keras, whose ``call`` fastrnn cannot run, and a layer
Keras quantized are refused too. ``hard_sigmoid`` in a model Keras 2 wrote
(a legacy ``.h5`` whose ``keras_version`` is 2.x or missing, a config whose
``keras_version`` is 2.x, a ``.keras`` file whose ``metadata.json`` says
2.x, a Keras 2 SavedModel or checkpoint) is Keras 2's ``clip(0.2 x + 0.5, 0,
1)``, not Keras 3's (see :func:`fastrnn.interop.tf_saved_model.keras2_activations`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import zipfile

import numpy as np

from .. import _safe_io
from ..bidirectional import Bidirectional
from ..layers import RNN
from ..models import (Activation, Dense, Dropout, Embedding, InputLayer, Masking, Sequential,
                      TimeDistributed, layer_from_config)
from . import tf_saved_model


def _snake(name):
    # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_names(class_names):
    """Keras saving_lib's group names for a container of objects of these classes."""
    used, out = {}, []
    for cls in class_names:
        name = _snake(cls)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        out.append(name)
    return out


def _entry_name(entry):
    return entry.get("name") or (entry.get("config") or {}).get("name")


def _found(value):
    """``value`` for an error message: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _check_entry(entry, where, functional):
    """Refuse a layer entry of a model config that is not ``{"class_name", "config", ...}``."""
    if not isinstance(entry, dict):
        raise ValueError(f"config: {where}: expected a layer entry {{'class_name', 'config', "
                         f"...}}, got {_found(entry)}")
    if not isinstance(entry.get("class_name"), str):
        raise ValueError(f"config: {where}: expected a string class_name, got "
                         f"{_found(entry.get('class_name'))}")
    if not isinstance(entry.get("config", {}), dict):
        raise ValueError(f"config: {where} ({entry['class_name']}): expected a dict config, "
                         f"got {_found(entry.get('config'))}")
    name = _entry_name(entry)
    if not (isinstance(name, str) or name is None and not functional):
        raise ValueError(f"config: {where} ({entry['class_name']}): expected a string name, "
                         f"got {_found(name)}")
    if functional and not isinstance(entry.get("inbound_nodes", []), list):
        raise ValueError(f"config: layer {name!r} ({entry['class_name']}): expected a list of "
                         f"inbound_nodes, got {_found(entry.get('inbound_nodes'))}")


def _is_op(entry):
    module = entry.get("module") or ""
    return isinstance(module, str) and (module.startswith("keras.src.ops") or ".ops." in module)


def _tensors(obj):
    """Every ``__keras_tensor__`` reference nested in a node's args."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return [obj]
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _ref(ref, where):
    """``(layer name, tensor index)`` of a tensor reference ``[layer name, node index,
    tensor index, ...]`` (a ``keras_history``, an ``input_layers`` / ``output_layers``
    entry, or a Keras 2 inbound node)."""
    if (not isinstance(ref, (list, tuple)) or len(ref) < 3 or not isinstance(ref[0], str)
            or any(isinstance(i, bool) or not isinstance(i, int) for i in ref[1:3])):
        raise ValueError(f"config: {where}: expected a tensor reference [layer name, node "
                         f"index, tensor index], got {_found(ref)}")
    return ref[0], ref[2]


def _parent(entry):
    """``(name, tensor index)``: the one layer feeding ``entry`` in a functional config, and
    which of its outputs it reads."""
    name = _entry_name(entry)
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise ValueError(f"layer {name!r} ({entry.get('class_name')}) is called {len(nodes)} "
                         "times; only linear models (each layer used once) are supported")
    node = nodes[0]
    where = f"layer {name!r} ({entry.get('class_name')}): inbound node"
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        kwargs = node.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"config: {where}: expected a dict of kwargs, got "
                             f"{_found(kwargs)}")
        tensors = _tensors(node.get("args", []))
        extra = _tensors({k: v for k, v in kwargs.items() if k != "mask"})
        if len(tensors) != 1 or extra:
            raise ValueError(f"layer {name!r} ({entry.get('class_name')}) takes "
                             f"{len(tensors) + len(extra)} tensors; only linear chains of "
                             "single-input layers are supported")
        config = tensors[0].get("config")
        return _ref(config.get("keras_history") if isinstance(config, dict) else None,
                    where + " keras_history")
    # Keras 2: [[parent_name, node_index, tensor_index, kwargs], ...]
    if not isinstance(node, list) or len(node) != 1:
        raise ValueError(f"layer {name!r} takes several tensors; only linear chains are "
                         "supported")
    return _ref(node[0], where)


def _history(tensor):
    """``(layer name, tensor index)`` a ``__keras_tensor__`` reference reads, or None."""
    config = tensor.get("config") if isinstance(tensor, dict) and \
        tensor.get("class_name") == "__keras_tensor__" else None
    ref = config.get("keras_history") if isinstance(config, dict) else None
    if not isinstance(ref, (list, tuple)) or len(ref) < 3 or not isinstance(ref[0], str):
        return None
    return ref[0], ref[2]


def _op_args(ref, class_name, by_name):
    """The args of the one call of the Keras operation ``ref`` reads (``NotEqual``,
    ``Any``) when it is a ``class_name`` that takes no keyword tensors, else None."""
    entry = by_name.get(ref[0]) if ref is not None and ref[1] == 0 else None
    if not isinstance(entry, dict) or entry.get("class_name") != class_name \
            or not (_is_op(entry) or entry.get("module") is None):  # (legacy .h5: no module)
        return None
    nodes = entry.get("inbound_nodes") or []
    node = nodes[0] if isinstance(nodes, list) and len(nodes) == 1 else None
    # (args are a list in a file, a tuple in a live model's config)
    if not isinstance(node, dict) or node.get("kwargs") or not isinstance(node.get("args"),
                                                                          (list, tuple)):
        return None
    return node["args"]


def _is_number(value, want):
    # (a live model's config holds the NumPy scalar Keras was given, a file's a float)
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_)) and value == want


def _is_propagated_mask(mask, source, by_name):
    """Whether ``mask``, a ``mask=`` tensor recorded in a layer's inbound node, is the
    mask Keras records for the one fastrnn propagates from ``source`` (``(entry,
    layer)`` of an ``Embedding(mask_zero=True)`` or a ``Masking``): Keras 3 records
    the mask it passes on by itself in the same form as one a user passes, as
    ``NotEqual(the Embedding's input, 0)`` or ``Any(NotEqual(the Masking's input,
    mask_value), axis=-1)``."""
    entry, layer = source
    nodes = entry.get("inbound_nodes") or []
    node = nodes[0] if isinstance(nodes, list) and len(nodes) == 1 else None
    args = node.get("args") if isinstance(node, dict) else None
    source_input = _history(args[0]) if isinstance(args, (list, tuple)) and args else None
    ref, value = _history(mask), 0
    if isinstance(layer, Masking):
        args = _op_args(ref, "Any", by_name)
        config = (by_name[ref[0]].get("config") or {}) if args is not None else {}
        if args is None or len(args) != 1 or config.get("axis") != -1 or config.get("keepdims"):
            return False
        ref, value = _history(args[0]), layer.mask_value
    args = _op_args(ref, "NotEqual", by_name)
    return (source_input is not None and args is not None and len(args) == 2
            and _history(args[0]) == source_input and _is_number(args[1], value))


def _check_mask_kwarg(entry, source, by_name):
    """Refuse a layer called with a ``mask=`` other than the one fastrnn propagates to it
    (``source``, see :func:`_is_propagated_mask`; None where no mask reaches it): the
    model recomputes masks with Keras's rules and would run without the mask given."""
    nodes = entry.get("inbound_nodes") or []
    node = nodes[0] if isinstance(nodes, list) and len(nodes) == 1 else None
    if isinstance(node, dict):  # Keras 3
        kwargs = node.get("kwargs")
        mask = kwargs.get("mask") if isinstance(kwargs, dict) else None
        if not _tensors(mask) or source is not None and _is_propagated_mask(mask, source,
                                                                             by_name):
            return
    elif isinstance(node, list) and len(node) == 1 and isinstance(node[0], list) \
            and len(node[0]) > 3 and isinstance(node[0][3], dict):
        # Keras 2 drops the mask it passes on by itself from the node: one recorded
        # there was passed by the user.
        if node[0][3].get("mask") is None:
            return
    else:
        return
    raise ValueError(f"layer {_entry_name(entry)!r} ({entry.get('class_name')}) is called "
                     "with mask=, a mask other than the one Keras propagates from an "
                     "Embedding(mask_zero=True) or a Masking layer before it; fastrnn "
                     "recomputes masks with Keras's propagation rules and would run it "
                     "without that mask, so a mask passed explicitly is not supported")


def _mask_source(layer, entry, source):
    """What passes a mask on past ``layer`` in a fastrnn model (see
    :class:`fastrnn.models.Sequential`), given ``source`` before it: ``(entry, layer)``
    of the Embedding or Masking layer that made it, or None."""
    if isinstance(layer, (RNN, Bidirectional)):
        return source if layer.return_sequences else None
    if isinstance(layer, Embedding):
        return (entry, layer) if layer.mask_zero else None
    if isinstance(layer, Masking):
        return entry, layer
    return source


def _quantization(dtype):
    """The quantization mode of a Keras dtype policy, or None: a serialised
    ``QuantizedDTypePolicy`` (and its kin: int8, int4, float8, GPTQ, AWQ) has a
    ``mode`` in its config; a policy name is ``"<mode>_from_<source dtype>"``."""
    if isinstance(dtype, dict):
        config = dtype.get("config")
        if not isinstance(config, dict):
            return None
        if config.get("mode") is not None:
            return config["mode"]
        dtype = config.get("name")
    if isinstance(dtype, str) and "_from_" in dtype:
        return dtype.split("_from_")[0]
    return None


def check_not_quantized(entry):
    """Refuse a Keras layer entry, or a layer or cell nested in it, that Keras quantized
    (``model.quantize("int8")``): its weights are Keras's quantized arrays and scales,
    which fastrnn does not read (it would take them for float weights of another count)."""
    config = entry.get("config") if isinstance(entry, dict) else None
    if not isinstance(config, dict):
        return
    mode = _quantization(config.get("dtype"))
    if mode is not None:
        raise ValueError(f"layer {_entry_name(entry)!r} ({entry.get('class_name')}) has "
                         f"Keras's quantized dtype policy ({mode}): Keras quantization is "
                         "not supported; load the float model and use fastrnn's quantize() "
                         "(e.g. model.quantize('int8'))")
    nested = [config.get(k) for k in ("cell", "layer", "backward_layer")]
    for many in (config.get("cell"), config.get("cells")):  # (a stack's cells)
        if isinstance(many, list):
            nested += many
    for sub in nested:
        check_not_quantized(sub)


def _single(refs, what):
    """``(layer name, tensor index)`` of a functional config's one input or output."""
    if not isinstance(refs, (list, tuple)):
        raise ValueError(f"config: {what}: expected a list of tensor references, got "
                         f"{_found(refs)}")
    if refs and not isinstance(refs[0], (list, tuple)):
        refs = [refs]
    if len(refs) != 1:
        raise ValueError(f"the model has {len(refs)} {what}; fastrnn models have exactly one")
    return _ref(refs[0], what)


def _returns_state(entry):
    """Whether a layer entry returns its states too (``return_state=True``, on
    it or on a Bidirectional's layer)."""
    cfg = entry.get("config") or {}
    inner = cfg.get("layer")  # a Bidirectional's layer
    inner = inner.get("config") if isinstance(inner, dict) else None
    return bool(cfg.get("return_state") or isinstance(inner, dict) and inner.get("return_state"))


def _which_output(index, entry):
    """Names output ``index`` (> 0) of a layer for a refusal."""
    if _returns_state(entry):
        return f"output {index} (a state it returns with return_state=True)"
    return f"output {index}"


def _first_output_only(consumer, parent, index, by_name):
    """Refuse a reference to any output of ``parent`` but its first: a fastrnn model passes
    each layer's first output on (see :class:`fastrnn.models.Sequential`)."""
    if index == 0:
        return
    entry = by_name.get(parent) or {}
    raise ValueError(
        f"{consumer} {_which_output(index, entry)} of layer {parent!r} "
        f"({entry.get('class_name')}); fastrnn models pass on only each layer's first "
        "output (a recurrent layer's sequence or last output), so a model that feeds a "
        "recurrent layer's state onward, or outputs it, is not supported")


def model_chain(model):
    """Layer entries of a serialised Keras model in run order, and their h5 group names.

    Parameters
    ----------
    model : dict
        ``{"class_name": "Sequential" | "Functional" | "Model", "config": {...}}``.

    Returns
    -------
    (list of dict, dict)
        The layer entries from input to output, and ``{layer name: group
        name under layers/}``.

    Raises
    ------
    ValueError
        A config that is not a serialised model of this form (saying what
        was expected and what was found), or a model that is not a chain in
        which each layer reads the first output of the one before it.
    """
    if not isinstance(model, dict) or "class_name" not in model:
        keys = f"a dict with keys {sorted(model)[:10]}" if isinstance(model, dict) \
            else _found(model)
        raise ValueError("config: expected a serialised Keras model {'class_name', 'config'} "
                         f"(model.get_config() wrapped so, or model.to_json()), got {keys}")
    cls = model["class_name"]
    cfg = model.get("config") or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"config: the {cls!r} model's config: expected a dict, got "
                         f"{_found(cfg)}")
    if cls in ("Sequential", "Functional", "Model"):
        layers = cfg.get("layers", [])
        if not isinstance(layers, list):
            raise ValueError(f"config: the {cls} model's layers: expected a list of layer "
                             f"entries, got {_found(layers)}")
        for i, entry in enumerate(layers):
            _check_entry(entry, f"layers[{i}]", cls != "Sequential")
    if cls == "Sequential":
        entries = list(layers)
        named = [e for e in entries if e.get("class_name") != "InputLayer"]
        if named and _returns_state(named[-1]):
            # (Keras returns [output, *states]: a model returning the output alone
            # would drop them without a word)
            raise ValueError(
                f"the model's last layer {_entry_name(named[-1])!r} "
                f"({named[-1].get('class_name')}) has return_state=True, so Keras's model "
                "returns [output, *states]; fastrnn models return one array (each "
                "layer's first output), so a model that outputs a state is not supported")
        groups = dict(zip([_entry_name(e) for e in named],
                          _unique_names([e["class_name"] for e in named])))
        return entries, groups
    if cls in ("Functional", "Model") and "layers" in cfg:
        real = [e for e in layers if not _is_op(e)]
        groups = dict(zip([_entry_name(e) for e in real],
                          _unique_names([e["class_name"] for e in real])))
        by_name = {_entry_name(e): e for e in layers}
        first, _ = _single(cfg.get("input_layers", []), "inputs")
        current, index = _single(cfg.get("output_layers", []), "outputs")
        _first_output_only("the model's output is", current, index, by_name)
        chain = []
        while True:
            if current not in by_name:
                raise ValueError(f"config: layer {current!r} is referenced but not defined")
            entry = by_name[current]
            if any(e is entry for e in chain):
                raise ValueError(f"config: the layers form a cycle through {current!r}")
            chain.append(entry)
            if current == first or entry.get("class_name") == "InputLayer":
                break
            parent, index = _parent(entry)
            _first_output_only(f"layer {current!r} ({entry['class_name']}) reads", parent,
                               index, by_name)
            current = parent
        if _entry_name(chain[-1]) != first:
            raise ValueError(f"config: the output does not depend on the input {first!r} "
                             "through a single chain of layers")
        return chain[::-1], groups
    raise ValueError(f"unsupported model class {cls!r}: load_keras reads Sequential and "
                     "functional models (subclassed models have no config to rebuild)")


# ----------------------------------------------------------------- h5 weights


def _dataset(obj, root, where):
    """An h5 dataset of ``root``'s file, not yet read (see :func:`build_model`)."""
    import h5py

    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"weights file: {where} is not a dataset")
    if obj.file != root.file or obj.is_virtual or obj.external:
        raise ValueError(f"weights file: dataset {where} is stored outside the file (an "
                         "external link, virtual or external dataset); weights must be in it")
    if obj.dtype.kind not in "fiub":
        raise ValueError(f"weights file: dataset {where} has dtype {obj.dtype}; expected numbers")
    return obj


def _vars(group, where):
    if "vars" not in group:
        raise ValueError(f"weights file: no group {where}/vars")
    v = _child(group, "vars", where)
    keys = list(v.keys())
    if not all(k.isdigit() for k in keys):
        raise ValueError(f"weights file: unexpected entries {keys[:20]} in {where}/vars")
    return [_dataset(_child(v, str(i), f"{where}/vars"), group, f"{where}/vars/{i}")
            for i in range(len(keys))]


def _child(group, key, where):
    """``group[key]``, refused where it is missing or a link to another file
    (refused before h5py follows it: it would open, or wait on, whatever the
    link names)."""
    import h5py

    if group.get(key, getlink=True) is None:
        raise ValueError(f"weights file: missing group {where}/{key}")
    if isinstance(group.get(key, getlink=True), h5py.ExternalLink):
        raise ValueError(f"weights file: {where}/{key} is an external link to another file")
    child = group[key]
    if child.file != group.file:
        raise ValueError(f"weights file: {where}/{key} is an external link to another file")
    return child


def _rnn_weights(entry, group, where):
    cell_group = _child(group, "cell", where)
    cell = (entry.get("config") or {}).get("cell")
    if isinstance(cell, list):  # Keras 2 style: a list of cells
        cell = {"class_name": "StackedRNNCells", "config": {"cells": cell}}
    if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        cells = cell["config"]["cells"]
        names = _unique_names([c["class_name"] for c in cells])
        container = _child(cell_group, "cells", where + "/cell")
        weights = []
        for name in names:
            weights += _vars(_child(container, name, where + "/cell/cells"),
                             f"{where}/cell/cells/{name}")
        return weights
    return _vars(cell_group, where + "/cell")


def _layer_weights(entry, group, where):
    cls = entry["class_name"]
    if cls in ("LSTM", "GRU", "SimpleRNN", "RNN"):
        return _rnn_weights(entry, group, where)
    if cls == "Bidirectional":
        cfg = entry["config"]
        fw = _rnn_weights(cfg["layer"], _child(group, "forward_layer", where),
                          where + "/forward_layer")
        bw = _rnn_weights(cfg.get("backward_layer") or cfg["layer"],
                          _child(group, "backward_layer", where), where + "/backward_layer")
        return fw + bw
    if cls == "TimeDistributed":
        return _vars(_child(group, "layer", where), where + "/layer")
    return _vars(group, where)


# Keras 2's cuDNN-only layers (tf.compat.v1.keras.layers), by class: the
# layer that computes the same on a CPU, and its number of gates.
_CUDNN = {"CuDNNLSTM": ("LSTM", 4), "CuDNNGRU": ("GRU", 3)}


def _from_cudnn(entry):
    """``(entry, parts)``: an entry of Keras 2's ``CuDNNLSTM`` or ``CuDNNGRU``,
    alone or in a ``Bidirectional``, with the layer that computes the same in
    its place, as tf_keras runs such a model on a CPU: ``LSTM`` and
    ``GRU(reset_after=True)``, both with sigmoid gates and tanh; ``parts``
    then gives, for each recurrent layer in weight order, the gates of a
    cuDNN one (its weights are converted by :func:`_cudnn_weights`) or None.
    Any other entry comes back as it is, with ``parts`` None."""
    cls = entry.get("class_name")
    config = entry.get("config")
    if not isinstance(config, dict):
        return entry, None
    if cls in _CUDNN:
        name, gates = _CUDNN[cls]
        fixed = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True}
        if name == "GRU":
            fixed["reset_after"] = True
        for key, value in fixed.items():  # (a cuDNN layer takes none of these)
            if key in config and config[key] != value:
                raise ValueError(f"{cls} {config.get('name')!r}: {key}={config[key]!r}; a "
                                 f"cuDNN layer computes with {key}={value!r} only")
        return dict(entry, class_name=name, config=dict(config, **fixed)), [gates]
    if cls != "Bidirectional":
        return entry, None
    config = dict(config)
    forward, backward = config.get("layer"), config.get("backward_layer")
    parts = [None, None]
    if isinstance(forward, dict):
        config["layer"], found = _from_cudnn(forward)
        parts = [found[0], found[0]] if found else parts
    if isinstance(backward, dict):
        config["backward_layer"], found = _from_cudnn(backward)
        parts[1] = found[0] if found else None
    if parts == [None, None]:
        return entry, None
    return dict(entry, config=config), parts


def _cudnn_weights(arrays, parts):
    """A cuDNN layer's weights (kernel, recurrent kernel, bias per part of
    ``parts``, see :func:`_from_cudnn`) as its ``LSTM`` / ``GRU`` takes them,
    as tf_keras converts them: cuDNN reads each gate's input kernel
    ``(D, H)`` as the row-major ``(H, D)`` matrix of its bytes, and each
    recurrent kernel transposed; an LSTM's two biases (input and recurrent)
    are summed, a GRU's are its ``(2, 3H)`` pair."""
    out = []
    for i, gates in enumerate(parts):
        kernel, recurrent, bias = arrays[3 * i: 3 * i + 3]
        if gates is None:
            out += [kernel, recurrent, bias]
            continue
        out.append(np.hstack([np.reshape(k.T, k.shape, order="F")
                              for k in np.hsplit(np.asarray(kernel), gates)]))
        out.append(np.hstack([k.T for k in np.hsplit(np.asarray(recurrent), gates)]))
        pair = np.asarray(bias).reshape(2, -1)
        out.append(pair[0] + pair[1] if gates == 4 else pair)
    return out


def _cudnn_shapes(expected, parts):
    """``expected`` (a layer's weight shapes) with each cuDNN part's bias as
    its file holds it: ``(2 * gates * units,)``."""
    expected = list(expected)
    for i, gates in enumerate(parts):
        if gates is not None and len(expected) >= 3 * i + 3:
            expected[3 * i + 2] = (2 * gates * expected[3 * i + 1][0],)
    return expected


def build_model(model_config, weights_of, backend=None, budget=None):
    """A :class:`~fastrnn.models.Sequential` from a Keras model config.

    ``weights_of(entry, group_name, layer)`` returns the Keras-order weights
    of a layer entry (``group_name`` is its h5 group, ``None`` for
    InputLayer; ``layer`` the fastrnn layer made from it, without weights):
    arrays or, given ``budget`` (a :class:`fastrnn._safe_io.ReadBudget` for
    the file), h5 datasets, whose count and shapes are checked against what
    the layer's config needs, and their sizes against the budget, before
    any is read; a recurrent layer without weights in a file is an error.
    Layers are made without random weights: a recurrent layer's shape
    arguments are checked against the weights that build it.
    """
    entries, groups = model_chain(model_config)
    by_name = {_entry_name(e): e for e in (model_config.get("config") or {}).get("layers", [])}
    layers, mask_source = [], None
    for stored in entries:
        with _naming_the_layer(stored):
            layer, mask_source = _build_layer(stored, weights_of, groups, budget, by_name,
                                              mask_source)
            if backend is not None:
                for sub in _recurrent_parts(layer):
                    sub.backend_arg = backend
            layers.append(layer)
    _check_features_chain(layers, [_entry_name(e) for e in entries])
    name = (model_config.get("config") or {}).get("name")
    return Sequential(layers, name=name)


def _build_layer(stored, weights_of, groups, budget, by_name, mask_source):
    """One entry of :func:`build_model`: ``(layer with its weights, the mask
    source after it)``."""
    check_not_quantized(stored)
    entry, cudnn = _from_cudnn(stored)
    deferred, declared = _safe_io.defer_build(entry)
    layer = layer_from_config(deferred)
    _check_mask_kwarg(entry, mask_source, by_name)
    mask_source = _mask_source(layer, entry, mask_source)
    if not isinstance(layer, InputLayer):
        weights = weights_of(stored, groups.get(_entry_name(entry)), layer)
        if budget is not None:
            weights = _read_checked(layer, weights, stored, budget, cudnn)
        elif cudnn:  # (arrays: their shapes checked before the conversion reshapes them)
            _check_shapes(layer, weights, stored, cudnn)
        if weights and cudnn:
            weights = _cudnn_weights(weights, cudnn)
        if weights:
            layer.set_weights(weights)
        for sub in _recurrent_parts(layer):
            _safe_io.check_features(declared, sub.cells[0].input_dim,
                                    f"layer {_entry_name(entry)!r}")
    return layer, mask_source


@contextlib.contextmanager
def _naming_the_layer(entry):
    """A ``ValueError`` or ``TypeError`` that does not name the layer of
    ``entry`` it came from gets ``layer 'name' (Class):`` in front."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        name = _entry_name(entry)
        if name is None or repr(name) in str(exc) or str(exc).startswith("load_keras"):
            raise
        kind = ValueError if isinstance(exc, ValueError) else TypeError
        raise kind(f"layer {name!r} ({entry.get('class_name')}): {exc}") from exc


def _check_features_chain(layers, names):
    """Refuse a model whose weights do not fit the feature count the layer
    before gives (the input's declared by an ``InputLayer``): Keras refuses
    such a file when it loads, and a call would only fail later. Layers this
    does not know end the check."""
    features, source = None, None
    for layer, name in zip(layers, names):
        where = f"layer {name!r} ({type(layer).__name__})"
        inner = layer.layer if isinstance(layer, TimeDistributed) else layer
        if isinstance(inner, InputLayer):
            shape = inner.batch_shape
            features = shape[-1] if shape and isinstance(shape[-1], int) else None
            source = f"the input ({name!r})"
            continue
        if isinstance(inner, (Masking, Dropout, Activation)):
            continue  # (Dropout's subclasses too: the features pass through)
        if isinstance(inner, Embedding):
            features, source = inner.output_dim, where
            continue
        if isinstance(inner, Dense):
            takes, gives = (None if inner.kernel is None else inner.kernel.shape[0]), inner.units
        elif isinstance(inner, (RNN, Bidirectional)):
            parts = _recurrent_parts(inner)
            takes = parts[0].cells[0].input_dim
            sizes = [p.output_size for p in parts]
            gives = sizes[0] if len(sizes) == 1 or inner.merge_mode in ("sum", "mul", "ave") \
                else (sum(sizes) if inner.merge_mode == "concat" else None)
        else:
            return
        if features is not None and takes is not None and takes != features:
            raise ValueError(f"{where}: its weights take {takes} input features, but "
                             f"{source} gives {features}")
        features, source = gives, where


def _expected_shapes(layer):
    """The shapes ``layer.set_weights`` takes, ``None`` where the config leaves a size
    open (the input features); ``None`` for a layer whose weights it cannot tell."""
    if isinstance(layer, Bidirectional):
        fw, bw = _expected_shapes(layer.forward_layer), _expected_shapes(layer.backward_layer)
        return None if fw is None or bw is None else fw + bw
    if isinstance(layer, RNN):
        shapes, dim = [], "D"
        for cell in layer.cells:
            if not hasattr(cell, "_weight_specs"):
                return None
            shapes += [tuple(None if d == "D" else d for d in shape)
                       for _, shape in cell._weight_specs(dim)]
            dim = cell.output_size
        return shapes
    if isinstance(layer, TimeDistributed):
        return _expected_shapes(layer.layer)
    if not hasattr(layer, "_weight_shapes"):
        return None
    return [(None, layer.units) if shape is None else tuple(shape)  # (Dense's open kernel)
            for _, shape in layer._weight_shapes()]


def _read_checked(layer, datasets, entry, budget, cudnn=None):
    """Read a layer's h5 datasets after checking their count and shapes against its
    config (``cudnn``: its cuDNN parts, see :func:`_from_cudnn`), and their sizes
    against the file's ``budget``."""
    _check_shapes(layer, datasets, entry, cudnn)
    for ds in datasets:
        budget.take(ds.size * ds.dtype.itemsize,
                    f"weights file: dataset {ds.name} {ds.shape} of {ds.dtype}")
    return [np.asarray(ds[()]) for ds in datasets]


def _check_shapes(layer, arrays, entry, cudnn=None):
    """Check the count and shapes of a layer's weights (h5 datasets or
    arrays) against its config, as the file holds them (``cudnn``: see
    :func:`_from_cudnn`); ``entry`` is the file's, which names the layer."""
    what = f"layer {_entry_name(entry)!r} ({entry.get('class_name')})"
    names = [f"dataset {a.name}" if getattr(a, "name", None) else f"weight {i} (Keras order)"
             for i, a in enumerate(arrays)]
    expected = _expected_shapes(layer)
    if expected is not None and cudnn:
        expected = _cudnn_shapes(expected, cudnn)
    if not arrays and _recurrent_parts(layer):
        raise ValueError(f"weights file: {what} has no weights in the file (a recurrent layer "
                         "without them would start from random weights)")
    if expected is not None:
        text = ", ".join("(" + ", ".join("D" if d is None else str(d) for d in shape)
                         + ("," if len(shape) == 1 else "") + ")" for shape in expected)
        if len(arrays) != len(expected):
            raise ValueError(f"weights file: {what} takes {len(expected)} arrays [{text}] by "
                             f"its config, the file has {len(arrays)}")
        for a, name, shape in zip(arrays, names, expected):
            if len(np.shape(a)) != len(shape) or any(
                    e is not None and e != g for e, g in zip(shape, np.shape(a))):
                raise ValueError(f"weights file: {name} has shape {np.shape(a)}; "
                                 f"{what} takes [{text}] by its config")


def _recurrent_parts(layer):
    if isinstance(layer, Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer] if isinstance(layer, RNN) else []


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_keras needs h5py: pip install 'fastrnn[interop]'") from exc
    return h5py


def _read_config(config):
    if isinstance(config, dict):
        return config
    if isinstance(config, str) and config.lstrip().startswith("{"):
        return _safe_io.load_json(config, "load_keras", "config")
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        where = f"load_keras: config {path!r}"
        if not os.path.exists(path):
            raise FileNotFoundError(f"{where}: no such file (config= takes a dict, a JSON "
                                    "string, or the path of a .json or .keras file)")
        if not os.path.isfile(path):
            raise ValueError(f"{where} is not a file (expected a .json or .keras file)")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                limit = min(_safe_io.inflate_limit(os.path.getsize(path)), _safe_io.JSON_LIMIT)
                model_config = _safe_io.load_json(
                    _safe_io.read_member(z, "config.json", limit, where), where, "config.json")
                # (as load_keras reads the file itself: its metadata.json may say Keras 2)
                return _keras2_meaning(model_config, _zip_keras_version(z, limit, where), False)
        _refuse_broken_zip(path, where)
        if os.path.getsize(path) > _safe_io.JSON_LIMIT:
            raise ValueError(f"{where} is larger than a model's config may be")
        with open(path, "rb") as f:
            return _safe_io.load_json(f.read(), where, "the file")
    raise TypeError(f"config: expected a dict, a JSON string or a path, got "
                    f"{type(config).__name__}")  # (load_keras checks first: see _naming_the_file)


def _keras_major(version):
    """The major version in a ``keras_version`` (a str, or bytes as Keras 2 wrote it in
    ``.h5`` files), or None."""
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    match = re.match(r"\s*(\d+)\.", version) if isinstance(version, str) else None
    return int(match.group(1)) if match else None


def _keras2_meaning(model_config, version, default):
    """``model_config`` with ``hard_sigmoid`` read as Keras 2's where Keras 2 wrote it
    (:func:`fastrnn.interop.tf_saved_model.keras2_activations`): as its own
    ``keras_version`` says (``model.to_json()`` records it), else as the file's
    ``version`` does, else ``default`` (whether the file's format is Keras 2's)."""
    major = _keras_major(model_config.get("keras_version")) \
        if isinstance(model_config, dict) else None
    if major is None:
        major = _keras_major(version)
    if default if major is None else major < 3:
        return tf_saved_model.keras2_activations(model_config)
    return model_config


def _from_weights_h5(f, model_config, backend, budget):
    def weights_of(entry, group_name, layer):
        if group_name is None:
            return []
        layers = _child(f, "layers", "")
        return _layer_weights(entry, _child(layers, group_name, "layers"),
                              f"layers/{group_name}")

    return build_model(model_config, weights_of, backend, budget)


def _weight_names(group, where):
    """The ``weight_names`` attribute of a legacy ``.h5`` layer group, as strings."""
    return _names_attr(group, "weight_names", where, "weight")


def _names_attr(group, attr, where, what):
    """An HDF5 attribute listing names (``layer_names``, ``weight_names``), as
    strings; absent: none."""
    raw = group.attrs.get(attr, [])
    if np.ndim(raw) != 1 or not all(isinstance(n, (bytes, str)) for n in raw):
        raise ValueError(f"weights file: {where} has {attr} {_found(raw)}; expected a "
                         f"list of {'dataset' if what == 'weight' else what} names")
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    except UnicodeDecodeError as exc:
        raise ValueError(f"weights file: {where} has a {what} name that is not UTF-8: "
                         f"{exc}") from exc


def _from_legacy_h5(f, config, backend, budget, where):
    """Keras 2-style ``model.save("m.h5")``: config in attrs (unless ``config`` is given),
    weights by layer name."""
    import h5py

    if config is None:
        model_config = _safe_io.load_json(f.attrs["model_config"], where,
                                          "its model_config attribute")
    else:
        model_config = _read_config(config)
    # Keras 3 records its version here; a file without one is Keras 2's (whose format this is)
    model_config = _keras2_meaning(model_config, f.attrs.get("keras_version"), True)
    root = _child(f, "model_weights", "")
    if not isinstance(root, h5py.Group):
        raise ValueError("weights file: /model_weights is not a group")
    return _build_from_groups(model_config, f, root, "model_weights/", backend, budget)


def _build_from_groups(model_config, f, root, where, backend, budget):
    """:func:`build_model` with Keras 2's HDF5 weights: a group per layer in
    ``root`` (``/model_weights`` of a model file, the file itself for
    ``save_weights``), listed in order by its ``layer_names`` attribute.

    Layers are matched by name when every layer of the file that holds
    weights is named in the config. Otherwise (a config saved from another
    build of the model: Keras numbers default names such as ``lstm_1`` per
    session) they are matched as Keras 2's ``load_weights`` matches them:
    the config's layers that take weights, in order, with the file's layers
    that hold weights, in order, the counts equal."""
    holding = [n for n in _layer_names(root, where) if _group_weight_names(root, n, where)]
    names = {_entry_name(e) for e in model_chain(model_config)[0]}
    of_group = _by_layer_name(f, root, where)
    if all(n in names for n in holding):
        return build_model(model_config, of_group, backend, budget)
    left = list(holding)

    def weights_of(entry, group_name, layer):
        if not (_expected_shapes(layer) or _recurrent_parts(layer)):
            return []
        if not left:
            raise ValueError(
                f"weights file: the config's layer names are not the file's {holding}, so "
                f"layers are matched in order, as Keras 2's load_weights does, and the file "
                f"holds weights for {len(holding)} layers: fewer than the config's layers "
                "that take weights")
        return of_group({"name": left.pop(0)}, None, layer)

    model = build_model(model_config, weights_of, backend, budget)
    if left:
        raise ValueError(
            f"weights file: the config's layer names are not the file's {holding}, so layers "
            "are matched in order, as Keras 2's load_weights does, and the config's layers "
            f"that take weights are {len(holding) - len(left)}, the file's {len(holding)}")
    return model


def _layer_names(root, where):
    """The ``layer_names`` attribute of a Keras 2 weights group, as strings."""
    return _names_attr(root, "layer_names", where, "layer")


def _group_weight_names(root, name, where):
    """The ``weight_names`` of layer ``name``'s group in ``root`` (none without a group)."""
    import h5py

    if name not in root:
        return []
    g = _child(root, name, where.rstrip("/"))
    return _weight_names(g, f"{where}{name}") if isinstance(g, h5py.Group) else []


def _by_layer_name(f, root, where):
    """``weights_of`` for Keras 2's HDF5 weights by layer name (see
    :func:`_build_from_groups`), a layer's datasets listed in order by its
    group's ``weight_names``."""
    import h5py

    def weights_of(entry, group_name, layer):
        name = _entry_name(entry)
        if name not in root:
            return []
        g = _child(root, name, where.rstrip("/"))
        if not isinstance(g, h5py.Group):
            raise ValueError(f"weights file: {where}{name} is not a group")
        datasets = []
        for n in _weight_names(g, f"{where}{name}"):
            if g.get(n, getlink=True) is None:
                raise ValueError(f"weights file: {where}{name} lists dataset {n!r} in "
                                 "its weight_names, but holds no such dataset")
            if isinstance(g.get(n, getlink=True), h5py.ExternalLink):
                raise ValueError(f"weights file: dataset {where}{name}/{n} is an external "
                                 "link to another file; weights must be in it")
            datasets.append(_dataset(g[n], f, f"{where}{name}/{n}"))
        return datasets

    return weights_of


def _from_keras_dir(path, config, backend):
    """Keras 3's ``model.save(path, zipped=False)``: a directory of the
    ``.keras`` zip's members."""
    names = set(os.listdir(path))
    if not {"config.json", "model.weights.h5"} <= names:
        raise ValueError(f"load_keras: {path!r} is a directory, but neither a Keras 2 "
                         "SavedModel or TF checkpoint nor a Keras 3 model saved unzipped "
                         f"(expected config.json and model.weights.h5, found "
                         f"{sorted(names)[:20]})")
    where = f"load_keras: {path!r}"
    model_config = _read_config(os.path.join(path, "config.json"))
    if config is not None:
        model_config = _read_config(config)
    meta = os.path.join(path, "metadata.json")
    version = None
    if os.path.isfile(meta) and os.path.getsize(meta) <= _safe_io.JSON_LIMIT:
        with open(meta, "rb") as f:
            version = _keras_version(lambda: f.read(), where)
    model_config = _keras2_meaning(model_config, version, False)
    weights = os.path.join(path, "model.weights.h5")
    budget = _safe_io.ReadBudget(os.path.getsize(weights), where)
    with _h5py().File(weights, "r") as f:
        return _from_weights_h5(f, model_config, backend, budget)


def _zip_keras_version(z, limit, where):
    """The ``keras_version`` of a ``.keras`` zip's ``metadata.json``, or None (none, or
    one that does not parse: loading does not need it)."""
    if "metadata.json" not in z.namelist():
        return None
    return _keras_version(lambda: _safe_io.read_member(
        z, "metadata.json", min(limit, _safe_io.JSON_LIMIT), where), where)


def _keras_version(read, where):
    """The ``keras_version`` in the ``metadata.json`` that ``read()`` returns, or
    None (one that does not parse: loading does not need it)."""
    try:
        meta = _safe_io.load_json(read(), where, "metadata.json")
    except (ValueError, zipfile.BadZipFile):
        return None
    return meta.get("keras_version") if isinstance(meta, dict) else None


def _refuse_broken_zip(path, where):
    """A file that starts as a zip does (a local file header) but that ``zipfile`` could
    not open has lost its end, where the central directory is: say so, rather than that
    it is not a zip at all."""
    if not os.path.isfile(path):
        return
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise ValueError(f"{where} is a zip archive (a .keras file?) that is truncated or "
                             "corrupted: its central directory, at the end, is missing or "
                             "unreadable")


def _naming_the_file(load):
    """``load`` whose refusals name the file: a ``ValueError`` that does not gets it as a
    prefix, and an unreadable zip or HDF5 structure (h5py raises ``RuntimeError`` for a
    link loop), a ``KeyError`` (an HDF5 object or a config entry that the load looked up and
    the file or config lacks), or a ``TypeError`` / ``AttributeError`` / ``IndexError``
    (a config value or an HDF5 object of another type than Keras writes) is a
    ``ValueError`` too. A bytes path is decoded (:func:`fastrnn._safe_io.source`)."""

    @functools.wraps(load)
    def wrapper(path, *args, **kwargs):
        path = _safe_io.source(path, "load_keras")
        config = kwargs.get("config", args[0] if args else None)
        if config is not None and not isinstance(config, (dict, str, os.PathLike)):
            raise TypeError(f"config: expected a dict, a JSON string or a path, got "
                            f"{type(config).__name__}")
        where = f"load_keras: {os.fspath(path)!r}"
        try:
            return load(path, *args, **kwargs)
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
            raise ValueError(f"{where} cannot be read (truncated or corrupted?): {exc}") from exc
        except KeyError as exc:
            raise ValueError(f"{where}: the file, or its config, lacks an entry the model "
                             f"needs: {exc}") from exc
        except ValueError as exc:
            if str(exc).startswith("load_keras"):
                raise
            raise ValueError(f"{where}: {exc}") from exc
        except (TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise ValueError(f"{where}: not a model Keras writes ({type(exc).__name__}: "
                             f"{exc})") from exc

    return wrapper


@_naming_the_file
def load_keras(path, config=None, backend=None):
    """Load a Keras 3 model file as a :class:`fastrnn.models.Sequential`, without Keras.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file, a ``.weights.h5`` file (then ``config`` is
        required), a legacy full-model ``.h5`` file, a Keras 2 SavedModel
        directory, or a Keras 2 ``save_weights`` TensorFlow checkpoint (then
        ``config`` is required; see :mod:`fastrnn.interop.tf_saved_model`).
    config : dict, str or path, optional
        The model config: ``{"class_name", "config"}`` as in a ``.keras``
        file's ``config.json``, the string ``model.to_json()`` returns, or a
        path to either (or to a ``.keras`` file). Required for a weights-only
        file; for a file that holds its own config (``.keras``, legacy
        ``.h5``, SavedModel) it is used instead of that config, and the
        weights are read for the layers it names.
    backend : str, optional
        fastrnn backend for the recurrent layers.

    Returns
    -------
    fastrnn.models.Sequential
        ``model(x)`` and ``model.predict(x, batch_size=...)`` as in Keras.

    Raises
    ------
    ValueError
        An unsupported layer or model structure (named; a functional model
        may use only the first output of each layer, not the states a
        recurrent layer returns with ``return_state=True``; a user's class
        registered with Keras; a layer Keras quantized; a ``mask=`` passed by
        hand; in a Keras 2 model, ``hard_sigmoid`` in a ``Dense`` or
        ``Activation``), a config that
        is not a serialised Keras model, or a file that is not what it
        claims: a truncated zip, a zip member that would inflate to more than a
        few times the file's size, a config nested more than 100 levels
        deep, a weight dataset whose shape is not what its layer's config
        needs, or whose size (with the ones read before it) is more than a
        few times the file's size, a dataset stored outside the file, a
        recurrent layer without weights, a weight the file lists but does
        not hold. Each is checked before the data is read, so a load takes
        memory in proportion to the file.
    TypeError
        ``config`` is not a dict, a string or a path.
    FileNotFoundError
        ``path``, or the ``config`` path, does not exist.

    Neither Keras nor TensorFlow is imported; ``h5py`` is required for the
    HDF5 forms (``.keras``, ``.h5``).
    """
    if tf_saved_model.is_tf_format(path):  # Keras 2 SavedModel / TF-format checkpoint
        model_config, weights_of = tf_saved_model.read_keras2(
            path, None if config is None else _read_config(config), check=model_chain)
        return build_model(model_config, weights_of, backend)
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_keras: no such file {path!r}")
    if os.path.isdir(path):
        return _from_keras_dir(path, config, backend)
    if path.endswith(".weights.json"):
        raise ValueError(f"load_keras: {path!r} is the index of sharded Keras 3 weights "
                         "(save_weights with max_shard_size), which fastrnn does not read; "
                         "save the weights unsharded (model.save_weights('w.weights.h5')) "
                         "or the model (model.save('m.keras'))")
    where, size = f"load_keras: {path!r}", os.path.getsize(path)
    budget = _safe_io.ReadBudget(size, where)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ValueError(f"load_keras: {path!r} is a zip but not a .keras file "
                                 "(expected config.json and model.weights.h5, found "
                                 f"{names[:20]})")
            limit = _safe_io.inflate_limit(size)
            model_config = _safe_io.load_json(_safe_io.read_member(
                z, "config.json", min(limit, _safe_io.JSON_LIMIT), where), where, "config.json")
            if config is not None:
                model_config = _read_config(config)
            # tf.keras 2.13-2.15 wrote .keras files too: their metadata.json says so
            model_config = _keras2_meaning(model_config, _zip_keras_version(z, limit, where),
                                           False)
            data = _safe_io.open_member(z, "model.weights.h5", limit, size, where)
            with h5py.File(data, "r") as f:
                return _from_weights_h5(f, model_config, backend, budget)
    _refuse_broken_zip(path, where)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"load_keras: {path!r} is neither a .keras zip nor an HDF5 file") from exc
    with f:
        if "model_config" in f.attrs and "model_weights" in f:
            return _from_legacy_h5(f, config, backend, budget, where)
        if config is None:
            raise ValueError(f"load_keras: {path!r} holds weights only; pass config= (the "
                             "model's config.json, model.to_json(), or a .keras file)")
        if "layer_names" in f.attrs:
            # Keras 2's save_weights("w.h5"): a group per layer name at the root
            model_config = _keras2_meaning(_read_config(config), f.attrs.get("keras_version"),
                                           True)
            return _build_from_groups(model_config, f, f, "/", backend, budget)
        return _from_weights_h5(f, _keras2_meaning(_read_config(config), None, False),
                                backend, budget)

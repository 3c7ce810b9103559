"""fastrnn's native file format: ``fastrnn.save(obj, path)`` / ``fastrnn.load(path)``.

A file is a zip archive with two members:

``fastrnn.json``
    ``{"format": "fastrnn", "format_version": 1, "fastrnn_version": ...,
    "object": {...}, "arrays_sha256": ..., "object_sha256": ...}``: the object's class name and
    config (the same dicts ``get_config()`` returns), and for each part of
    the object the names of its weight arrays.
``arrays.npz``
    The weights (and a stateful layer's carried states) as plain NumPy
    arrays, written with ``numpy.savez`` and read with
    ``allow_pickle=False``.

**No pickle; loading never executes code.** ``load`` parses JSON, reads
numeric arrays with ``allow_pickle=False``, and builds objects only from a
fixed table of fastrnn classes (never a name imported from the file). The
SHA-256 of ``arrays.npz`` and that of the object description are checked,
so a truncated, corrupted or edited file is a ``ValueError`` saying so,
never a crash. A crafted file (whose checksums a sender can recompute) is
bounded too: each member may inflate to at most a few times the file's own
size, each array's shape must account for its bytes, and layers are built
by the file's arrays, never by random weights of a size the config declares
(see :func:`load`). Round trips are exact: same config, same arrays (bit for
bit), same outputs.

Supported: every fastrnn layer (``SimpleRNN``, ``GRU``, ``LSTM``, ``RNN``
over built-in cells, ``Bidirectional``), the cells, the layers and the
``Sequential`` model of :mod:`fastrnn.models` (what ``load_keras`` and
``from_keras`` return), converted PyTorch modules
(:mod:`fastrnn.interop.torch`), and a model's stream
(:class:`fastrnn.models.ModelStream`, with its carried states). A layer with a Python-callable activation
cannot be saved (its code would have to be stored): ``save`` raises.

:func:`read_tf_checkpoint` reads TensorFlow's own checkpoints (TF1
``Saver``, TF2 ``tf.train.Checkpoint``, Keras 2 ``save_weights``, a
SavedModel's variables) into NumPy arrays, without TensorFlow (see
:mod:`fastrnn._tf_bundle`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import numpy as np

from . import _nest, _safe_io, serialization
from . import models  # noqa: F401  (registers the layers and models load builds)
from ._tf_bundle import read_tf_checkpoint  # noqa: F401  (public: fastrnn.io.read_tf_checkpoint)
from ._version import __version__
from .interop import torch as _torch  # noqa: F401  (registers the converted PyTorch modules)

FORMAT = "fastrnn"
FORMAT_VERSION = 1
_CONFIG = "fastrnn.json"
_ARRAYS = "arrays.npz"


class _Writer:
    def __init__(self):
        self.arrays = {}

    def add(self, weights):
        names = []
        for w in weights:
            name = f"a{len(self.arrays)}"
            a = np.asarray(w)
            if a.dtype.kind not in "fiub" or a.dtype.hasobject:
                raise ValueError(f"save: weight arrays must be numeric, got dtype {a.dtype}")
            self.arrays[name] = a
            names.append(name)
        return names


_KINDS = ("rnn", "cell", "layer", "model", "torch")


def _describe(obj, writer):
    """``{"class_name", "config", "weights", ...}`` for ``obj``; arrays go to ``writer``."""
    spec = _describe_plain(obj, writer)
    cells = obj._quantizable() if hasattr(obj, "_quantizable") else []
    if any(c.quantization_mode is not None for c in cells):
        # the compact weights, exactly, one entry per cell (None: float)
        spec["quantized"] = [None if c.quantization_mode is None else
                             {"mode": c.quantization_mode,
                              "arrays": writer.add(c._quantized.arrays())} for c in cells]
    return spec


def _load_compact(obj, entries, get, path):
    """Put a file's compact weights (``spec["quantized"]``) into ``obj``'s cells."""
    cells = obj._quantizable() if hasattr(obj, "_quantizable") else []
    if not isinstance(entries, list) or len(entries) != len(cells):
        raise ValueError(f"{path}: quantized must list one entry per cell ({len(cells)})")
    for i, (cell, entry) in enumerate(zip(cells, entries)):
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("mode"), str):
            raise ValueError(f"{path}: quantized[{i}] must be null or {{mode, arrays}}")
        cell._load_quantized(entry["mode"], get(entry.get("arrays"), f"quantized[{i}]"),
                             f"{path}: quantized[{i}]")


def _describe_plain(obj, writer):
    cls_name = type(obj).__name__
    if isinstance(obj, models.ModelStream):
        return {"class_name": cls_name, "config": obj._config(),
                "model": _describe(obj.model, writer),
                "states": [writer.add(_nest.flatten(s)) for s in obj.states]}
    kind = serialization.kind_of(obj)
    if kind == "torch":
        return {"class_name": cls_name, "config": obj.get_config(),
                "weights": dict(zip(obj.parameter_names, writer.add(obj.get_weights())))}
    if kind == "model":
        return {"class_name": cls_name, "config": {"name": obj.name},
                "layers": [_describe(layer, writer) for layer in obj.layers]}
    if kind in ("rnn", "cell") and not obj.built:
        raise ValueError(f"save: the {cls_name} is not built; build it or set its weights "
                         "first (loading it would otherwise start from random weights)")
    if kind == "rnn":
        spec = {"class_name": cls_name, "config": obj.get_config(),
                "weights": writer.add(obj.get_weights())}
        for sub in getattr(obj, "forward_layer", None), getattr(obj, "backward_layer", None):
            if sub is not None and sub.stateful and sub.states is not None:
                spec.setdefault("states", []).append(writer.add(sub.states))
        if not hasattr(obj, "forward_layer") and obj.stateful and obj.states is not None:
            spec["states"] = writer.add(obj.states)
        return spec
    if kind in ("cell", "layer"):
        return {"class_name": cls_name, "config": obj.get_config(),
                "weights": writer.add(obj.get_weights())}
    raise TypeError(f"save: cannot save a {cls_name}; fastrnn saves its layers, cells, "
                    "models and converted PyTorch modules")


def _build(spec, arrays, path="object", file=None):
    """Rebuild an object from its spec (only registered classes: see
    :mod:`fastrnn.serialization`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
        raise ValueError(f"{path}: expected an object description with a class_name")
    name = spec["class_name"]
    if name == "ModelStream" and path == "object":
        return _build_model_stream(spec, arrays, path, file)
    if name not in serialization.names(_KINDS):
        raise ValueError(f"{path}: unknown class {name!r}; this fastrnn reads "
                         f"{serialization.names(_KINDS, shown=True)}")
    cls = serialization.lookup(name, _KINDS)
    kind = serialization.kind_of_class(cls)
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config must be a JSON object")

    def get(names, where):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: {where} must be a list of array names")
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"{path}: arrays {missing} missing from {_ARRAYS}")
        return [arrays[n] for n in names]

    if kind == "torch":
        weights = spec.get("weights")
        if not isinstance(weights, dict):
            raise ValueError(f"{path}: weights must map parameter names to arrays")
        layers = config.get("num_layers", 1)
        if isinstance(layers, int) and layers > len(weights):  # (each layer has 2+ arrays)
            raise ValueError(f"{path}: num_layers={layers} but the file holds "
                             f"{len(weights)} arrays")
        state = dict(zip(weights, get(list(weights.values()), "weights")))
        obj = cls.from_config(config, state_dict=state)
        if "quantized" in spec:
            _load_compact(obj, spec["quantized"], get, path)
        return obj
    if kind == "model":
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise ValueError(f"{path}: layers must be a list")
        built = [_build(s, arrays, f"{path}.layers[{i}]") for i, s in enumerate(layers)]
        return cls(built, name=config.get("name"))
    declared = []
    if kind in ("rnn", "cell"):
        # Made unbuilt, then built by the file's arrays: no random weights, and
        # the sizes the config declares are checked against the arrays.
        deferred, declared = _safe_io.defer_build({"class_name": name, "config": config})
        obj = serialization.deserialize(deferred, kinds=(kind,))
    else:
        obj = serialization.deserialize({"class_name": name, "config": config},
                                        kinds=("layer",))
    weights = get(spec.get("weights", []), "weights")
    if weights:
        obj.set_weights(weights)
    elif kind in ("rnn", "cell"):
        raise ValueError(f"{path}: the {name} has no weights in the file (a recurrent layer "
                         "or cell is saved built; an unbuilt one would start from random "
                         "weights)")
    if "quantized" in spec:
        _load_compact(obj, spec["quantized"], get, path)
    for sub in (obj.forward_layer, obj.backward_layer) if name == "Bidirectional" else [obj]:
        if declared:
            _safe_io.check_features(declared, sub.cells[0].input_dim, path)
    states = spec.get("states")
    if states is not None:
        subs = [obj] if name != "Bidirectional" else [
            s for s in (obj.forward_layer, obj.backward_layer) if s.stateful]
        groups = [states] if name != "Bidirectional" else states
        if len(groups) != len(subs):
            raise ValueError(f"{path}: states do not match the layer")
        for sub, names in zip(subs, groups):
            values = get(names, "states")
            sizes = sub.state_sizes
            if len(values) != len(sizes) or any(
                    v.ndim != 2 or v.shape[1] != s for v, s in zip(values, sizes)):
                raise ValueError(f"{path}: states do not match the layer's state sizes {sizes}")
            batches = sorted({v.shape[0] for v in values})
            declared_batch = getattr(sub, "_declared_batch", None)
            if len(batches) > 1 or declared_batch not in (None, batches[0]):
                raise ValueError(f"{path}: states of batch size {batches} for a layer of "
                                 f"batch_size={declared_batch} (its config)")
            sub.states = [np.array(v, dtype=sub.dtype) for v in values]
    return obj


def _build_model_stream(spec, arrays, path, file=None):
    """A :class:`fastrnn.models.ModelStream` from its spec: the model, then
    the stream, then its states. The states' shapes are checked against the
    batch size before the stream allocates anything for it."""
    config = spec.get("config")
    if not isinstance(config, dict) or set(config) != {"batch_size", "backend", "threads"}:
        raise ValueError(f"{path}: config must hold batch_size, backend and threads")
    B = config["batch_size"]
    if isinstance(B, bool) or not isinstance(B, int) or B < 1:
        raise ValueError(f"{path}: batch_size expected a positive integer, got {B!r}")
    model = _build(spec.get("model"), arrays, f"{path}.model")
    if not isinstance(model, models.Sequential):
        raise ValueError(f"{path}.model: expected a Sequential model, got "
                         f"{type(model).__name__}")
    layers = [layer for layer in model.layers if isinstance(layer, models.RNN)]
    states = spec.get("states")
    if not isinstance(states, list) or len(states) != len(layers):
        raise ValueError(f"{path}: states must list one entry per recurrent layer "
                         f"({len(layers)})")
    for i, (layer, names) in enumerate(zip(layers, states)):
        sizes = layer.state_sizes
        if not isinstance(names, list) or len(names) != len(sizes) \
                or not all(isinstance(n, str) and n in arrays for n in names):
            raise ValueError(f"{path}: states[{i}] must name {len(sizes)} arrays in "
                             f"{_ARRAYS}")
        for n, size in zip(names, sizes):  # (this bounds batch_size by the file)
            shape = arrays.shape(n)
            if shape != (B, size):
                raise ValueError(f"{path}: states[{i}] array {n!r} has shape {shape}, "
                                 f"expected {(B, size)} for batch_size={B}")
    # (threads is a preference: see ModelStream._restore)
    stream = models.ModelStream._restore(model, B, config["backend"], config["threads"],
                                         file or path)
    stream.states = [_nest.pack_as(layer.state_structure, [arrays[n] for n in names])
                     for layer, names in zip(layers, states)]
    return stream


def save(obj, path):
    """Save a fastrnn layer, cell, model, converted PyTorch module or model
    stream (:meth:`fastrnn.Sequential.stream`: the model and every carried
    state) to ``path``.

    The file holds a JSON config and the weights as NumPy arrays (no
    pickle); see :mod:`fastrnn.io`. ``path`` may also be a writable binary
    file object. The config is checked to rebuild before anything is
    written, so an object that cannot be loaded back is never saved.
    """
    writer = _Writer()
    spec = _describe(obj, writer)
    try:
        text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                           "fastrnn_version": __version__, "object": spec},
                          allow_nan=True, sort_keys=True)
        rebuilt = json.loads(text)["object"]
        if isinstance(obj, models.ModelStream):  # (its model: a stream would start threads)
            rebuilt = rebuilt["model"]
        _build(rebuilt, writer.arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save: {type(obj).__name__} cannot be saved in the native format "
                         f"(its config does not rebuild: {exc}). Python-callable "
                         "activations cannot be stored; use named activations.") from exc
    buf = io.BytesIO()
    np.savez(buf, **writer.arrays)
    blob = buf.getvalue()
    header = json.loads(text)
    header["arrays_sha256"] = hashlib.sha256(blob).hexdigest()
    header["object_sha256"] = _object_digest(header["object"])
    text = json.dumps(header, sort_keys=True, indent=1)
    target = path if hasattr(path, "write") else os.fspath(path)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(_CONFIG, text)
        z.writestr(_ARRAYS, blob)


def _object_digest(obj):
    """SHA-256 of the object description in a canonical JSON form (sorted
    keys), so that an edited config is caught like edited weights."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def load(path):
    """Load what :func:`save` wrote. **Never executes code from the file.**

    What the file declares is checked against what it holds before anything
    is allocated (see :mod:`fastrnn._safe_io`): each member may inflate to at
    most a few times the file's own size, each array's shape and dtype must
    account exactly for its bytes, arrays are read one at a time as the
    object is rebuilt, and layers are made without random weights, from the
    file's arrays, whose shapes must match the config. The memory a load
    takes is therefore bounded by a few times the file's size.

    Raises
    ------
    ValueError
        The file is not a fastrnn file, was written by a newer format
        version, is truncated, was modified after it was written, declares
        more than it holds, or describes an object its arrays do not fit
        (a recurrent layer without weights among them).
    FileNotFoundError
        No such file.
    TypeError
        A file object opened in text mode.
    """
    path = _safe_io.source(path, "fastrnn.load")
    is_file = hasattr(path, "read")
    where = getattr(path, "name", None) or (os.fspath(path) if not is_file else "<file>")
    if not is_file and not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"fastrnn.load: no such file {where!r}")
    try:
        size = _safe_io.size_of(path)
        with zipfile.ZipFile(path if is_file else os.fspath(path)) as z:
            return _load_archive(z, size, f"fastrnn.load: {where!r}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
            NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"fastrnn.load: {where!r} is not a readable fastrnn file "
                         f"(truncated or not a fastrnn save?): {exc}") from exc
    except ValueError:
        raise
    except Exception as exc:  # zlib.error and other decoder failures
        raise ValueError(f"fastrnn.load: {where!r} is corrupted: {exc}") from exc


def _load_archive(z, size, where):
    names = z.namelist()
    if _CONFIG not in names or _ARRAYS not in names:
        raise ValueError(f"{where} is not a readable fastrnn file: expected members "
                         f"{_CONFIG} and {_ARRAYS}, found {names[:20]}")
    limit = _safe_io.inflate_limit(size)
    text = _safe_io.read_member(z, _CONFIG, min(limit, _safe_io.JSON_LIMIT), where)
    header = _safe_io.load_json(text, where, _CONFIG)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{where} is not a fastrnn file (format tag missing)")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{where}: format_version missing or invalid")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {version}, written by "
                         f"fastrnn {header.get('fastrnn_version')}; this fastrnn "
                         f"({__version__}) reads up to version {FORMAT_VERSION}: upgrade fastrnn")
    if version < 1:
        raise ValueError(f"{where}: invalid format version {version}")
    # (the SHA-256 below covers the member, so its CRC-32 is not checked too)
    blob = _safe_io.open_member(z, _ARRAYS, limit, size, where, check_crc=False)
    digest = hashlib.sha256()
    while chunk := blob.read(1 << 20):
        digest.update(chunk)
    if header.get("arrays_sha256") != digest.hexdigest():
        raise ValueError(f"{where}: the weights do not match their checksum "
                         "(the file was truncated, corrupted or modified)")
    # (files written before the config had its own checksum carry none)
    if "object_sha256" in header and header["object_sha256"] != _object_digest(header.get("object")):
        raise ValueError(f"{where}: the configuration does not match its checksum "
                         f"(the file's {_CONFIG} was modified)")
    blob.seek(0)
    try:
        arrays = _safe_io.NpzReader(blob, z.getinfo(_ARRAYS).file_size, _ARRAYS)
        return _build(header.get("object"), arrays, file=where)  # (where: names the file)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever a crafted file provokes is a bad file
        raise ValueError(f"{where}: invalid object description: "
                         f"{type(exc).__name__}: {exc}") from exc

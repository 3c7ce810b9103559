"""One registry of the classes fastrnn builds from a configuration.

Every class that can be saved registers itself here, with its kind:
``"cell"`` (Keras-style cells), ``"rnn"`` (recurrent layers,
``Bidirectional``), ``"layer"`` (the non-recurrent layers of
:class:`fastrnn.models.Sequential`), ``"model"`` (``Sequential``) and
``"torch"`` (converted PyTorch modules, rebuilt with their state dict).
Its ``get_config()`` and ``from_config(config)`` carry the configuration.
:func:`serialize` / :func:`deserialize`, ``Sequential``, Keras conversion,
``fastrnn.save`` / ``fastrnn.load`` and stream files all go through it, and
nothing is ever built from a name that is not registered (a file cannot
name a class to import).
"""

from __future__ import annotations

import copy

_CLASSES = {}  # class name -> (kind, class)


def register(kind):
    """A class decorator: ``cls`` can be rebuilt by name, as a ``kind``."""

    def add(cls):
        _CLASSES[cls.__name__] = (kind, cls)
        return cls

    return add


def kind_of(obj):
    """The registered kind of ``obj``'s exact class, or None."""
    entry = _CLASSES.get(type(obj).__name__)
    return entry[0] if entry is not None and entry[1] is type(obj) else None


def kind_of_class(cls):
    """The kind ``cls`` was registered as, or None."""
    entry = _CLASSES.get(cls.__name__)
    return entry[0] if entry is not None and entry[1] is cls else None


def names(kinds, shown=False):
    """The registered class names of ``kinds``, sorted; ``shown``: those an
    error message lists (not fastrnn's private classes, such as a converted
    PyTorch LSTM's projected cell, which only fastrnn's own files name)."""
    return sorted(n for n, (k, _) in _CLASSES.items()
                  if k in kinds and not (shown and n.startswith("_")))


def lookup(name, kinds, where="deserialize", what="class"):
    """The registered class ``name`` of one of ``kinds``; a ``ValueError``
    naming the supported ones otherwise."""
    entry = _CLASSES.get(name) if isinstance(name, str) else None
    if entry is None or entry[0] not in kinds:
        raise ValueError(f"{where}: unsupported {what} {name!r}; expected one of "
                         f"{names(kinds, shown=True)}")
    return entry[1]


def serialize(obj):
    """``{"class_name", "config"}`` for a fastrnn object (Keras's serialised form)."""
    if not callable(getattr(obj, "get_config", None)):
        raise TypeError(f"serialize: expected a fastrnn layer or Keras-style cell (an object "
                        f"with get_config), got {type(obj).__name__}")
    return {"module": "keras.layers", "class_name": type(obj).__name__,
            "config": obj.get_config(), "registered_name": None}


def _check_keras_own(obj, where, what):
    """Refuse an entry Keras wrote for a class of its user's.

    Keras 3 (and tf_keras) write ``"module": "keras.layers"`` and
    ``"registered_name": None`` for their own layers and cells (as
    :func:`serialize` does); for a user's class, the user's module or
    ``None``, and the name it was registered under (``"mypkg>Dense"``; the
    class name for a class never registered). Such a class may be named like
    a built-in (``class Dense(keras.layers.Dense)``) and override ``call``:
    building the built-in of that name would silently drop its code. An
    entry without these keys (older Keras 2 configs, the top-level entries of
    a legacy ``.h5``) passes.
    """
    class_name = obj["class_name"]
    registered = obj.get("registered_name")
    module = obj.get("module")
    if (registered is None or registered == class_name) and (
            "module" not in obj or isinstance(module, str)
            and module.split(".")[0] in ("keras", "tf_keras")):  # (not "keras_custom")
        return
    config = obj.get("config")
    name = (config.get("name") if isinstance(config, dict) else None) or obj.get("name")
    raise ValueError(f"{where}: layer {name!r} is of a custom {what} {class_name!r} "
                     f"(registered_name {registered!r}, module {module!r}), not Keras's own "
                     f"{class_name}: fastrnn runs only Keras's built-in layers and cells and "
                     "cannot run its call")


def deserialize(obj, kinds=("rnn", "cell"), where="deserialize", what="class"):
    """Build an object from :func:`serialize`'s output or a Keras-serialised dict.

    Only registered classes of ``kinds`` are built; Keras-only keys that
    carry nothing for inference (``build_config``) are ignored, and
    ``registered_name`` and ``module`` must name Keras's own class (a
    ``ValueError`` for a user's class registered with Keras, see
    ``_check_keras_own``). The config is copied, never changed.
    """
    if not isinstance(obj, dict) or "class_name" not in obj:
        raise ValueError(f"{where}: expected a dict with 'class_name' and 'config', got {obj!r}")
    cls = lookup(obj["class_name"], kinds, where, what)
    _check_keras_own(obj, where, what)
    return cls.from_config(copy.deepcopy(obj.get("config") or {}))

"""fastrnn: fast RNN inference (SimpleRNN, GRU, LSTM) on CPU and NVIDIA GPUs.

Keras-style layers (``fastrnn.LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``,
``Bidirectional``) and cells, a TF1-style API in ``fastrnn.nn``, converters
from Keras and PyTorch, and three backends behind one kernel contract:
``reference`` (NumPy), ``cpu`` (Numba) and ``cuda`` (Numba CUDA).
"""

from . import dispatch, initializers, nn, streaming
from ._version import __version__
from .bidirectional import Bidirectional
from .cells import GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells
from .dispatch import get_backend, get_num_threads, set_backend, set_num_threads, warmup
from .interop import (  # torch, keras and h5py load only when these run
    from_keras, from_torch, from_torch_state_dict, from_torch_weights, load_keras)
from .io import load, save
from .layers import GRU, LSTM, RNN, SimpleRNN, deserialize, serialize
from .models import Sequential

__all__ = [
    "GRU", "LSTM", "RNN", "Bidirectional", "SimpleRNN",
    "GRUCell", "LSTMCell", "SimpleRNNCell", "StackedRNNCells",
    "get_backend", "set_backend", "get_num_threads", "set_num_threads", "warmup",
    "serialize", "deserialize", "nn", "streaming", "dispatch", "initializers",
    "from_keras", "load_keras", "from_torch", "from_torch_state_dict", "from_torch_weights",
    "save", "load", "Sequential", "__version__",
]

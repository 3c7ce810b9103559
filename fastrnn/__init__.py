"""fastrnn: fast RNN inference (SimpleRNN, GRU, LSTM) on CPU and NVIDIA GPUs.

Keras-style layers (``fastrnn.LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``,
``Bidirectional``) and cells, a TF1-style API in ``fastrnn.nn``, converters
from Keras and PyTorch, and three backends behind one kernel contract:
``reference`` (NumPy), ``cpu`` (Numba) and ``cuda`` (Numba CUDA).
"""

__version__ = "0.1.0"

from .cells import GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells
from . import dispatch, initializers, nn
from .dispatch import get_backend, get_num_threads, set_backend, set_num_threads
from .layers import GRU, LSTM, RNN, Bidirectional, SimpleRNN, deserialize, serialize
from .interop import (  # light: torch/keras/h5py load lazily
    from_keras, from_torch, from_torch_state_dict, from_torch_weights, load_keras)
from .io import load, save
from .models import Sequential
from . import streaming  # layer.stream(); fastrnn.streaming.load_stream(path)

__all__ = [
    "GRU", "LSTM", "RNN", "Bidirectional", "SimpleRNN",
    "GRUCell", "LSTMCell", "SimpleRNNCell", "StackedRNNCells",
    "get_backend", "set_backend", "get_num_threads", "set_num_threads",
    "serialize", "deserialize", "nn",
    "from_keras", "load_keras", "from_torch", "from_torch_state_dict", "from_torch_weights",
    "save", "load", "Sequential",
]

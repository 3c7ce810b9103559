"""The version of fastrnn (``fastrnn.__version__``), written into saved files."""

__version__ = "0.1.0"

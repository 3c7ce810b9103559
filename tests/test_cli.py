"""``python -m fastrnn``: each command's help, and ``info``'s report."""

import pytest

from fastrnn.__main__ import main


def test_info_prints_every_section(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for section in ("versions:", "cpu:", "threads:", "quantized:", "dispatch:"):
        assert f"\n{section}" in "\n" + out
    # the instructions the quantized kernels use, named for this CPU
    assert "bfloat16 weights: " in out and "int8 weights: " in out


@pytest.mark.parametrize("command", ["info", "bench", "warmup", "predict"])
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"python -m fastrnn {command}" in capsys.readouterr().out


def test_info_rejects_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "--bogus"])
    assert e.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_predict_help_names_example_mode(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--example DIR" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_predict_without_dask_says_which_extra(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "dask", None)  # as if the extra were not installed
    assert main(["predict", "model.fastrnn", "x.npy", "y.zarr"]) == 2
    err = capsys.readouterr().err
    assert "needs the dask extra" in err and "fastrnn[dask]" in err

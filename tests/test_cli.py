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


@pytest.mark.parametrize("value", ["reference", "bogus"])
def test_info_tells_auto_apart_from_the_default(value, monkeypatch, capsys):
    """With FASTRNN_BACKEND set, "auto picks" is still what auto picks (cpu
    here), the default is on its own line, and a bad value leaves the rest
    of the dispatch section in place."""
    monkeypatch.setenv("FASTRNN_BACKEND", value)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "auto picks for a float32 LSTM: cpu" in out
    for name in ("reference", "cpu", "cuda"):
        assert f"\n  {name}: " in out
    if value == "bogus":
        assert "default backend: error: FASTRNN_BACKEND" in out
    else:
        assert "follow the default: reference" in out


def test_warmup_precision_takes_what_bench_takes(monkeypatch, capsys):
    from fastrnn import dispatch

    asked = []

    def warmup(**kw):
        """Record what would be compiled."""
        asked.append(kw)
        return []

    monkeypatch.setattr(dispatch, "warmup", warmup)
    assert main(["warmup", "-q", "--precision", "float32, int8,int8"]) == 0
    assert asked[0]["precisions"] == ["int8"]
    with pytest.raises(SystemExit) as e:
        main(["warmup", "--precision", "fp8"])
    assert e.value.code == 2 and "--precision" in capsys.readouterr().err


def test_info_says_when_the_environment_changes_the_kernels(monkeypatch, capsys):
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    monkeypatch.delenv("FASTRNN_CPU_GENERIC", raising=False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "FASTRNN_BACKEND not set" in out and "FASTRNN_CPU_GENERIC" not in out
    monkeypatch.setenv("FASTRNN_BACKEND", "")
    monkeypatch.setenv("FASTRNN_CPU_GENERIC", "yes")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "FASTRNN_BACKEND=''" in out   # set but empty: auto, said apart from unset
    assert "FASTRNN_CPU_GENERIC='yes': the generic kernels run every layer" in out

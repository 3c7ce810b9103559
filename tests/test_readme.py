"""The README's quick start runs as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_quick_start_runs(capsys):
    text = open(README, encoding="utf-8").read()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README quick start", "exec"), {})
    assert "(8, 100, 64) (8, 100, 32)" in capsys.readouterr().out

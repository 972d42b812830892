"""The CLI's light commands load no torch, triton, pandas or matplotlib: `--help` took 2 s on a 2-core CPU when
they did, 0.2 s without them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What the commands below must not import, each of them 0.1 to 1 s.
HEAVY = ("torch", "triton", "pandas", "matplotlib")

# A fresh interpreter, as the entry point starts: the command's output first, then one JSON line of its exit
# code and the heavy modules it loaded.
_PROBE = """\
import json, sys
from graph_harness.cli import main
code = main({argv!r})
print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules]]))
"""


@pytest.mark.parametrize(("argv", "code"), [
    (["--help"], 0),
    (["run", "--help"], 0),
    (["report", "--help"], 0),
    (["run", "--replays", "x"], 2),
    (["footprint", "no-such-model"], 2),
    (["reproduce", "no-such-bug"], 2),
    (["run", "no-such-scenario"], 2),
    (["run", "deepseek-v3-ep-decode", "--variant", "nope"], 2),
    (["run", "deepseek-v3-ep-decode", "--sizes", "3"], 2),
    (["report", "no-such-scenario", "--out", "/nonexistent/never-written"], 2),
    (["list"], 0),
    (["schema"], 0),
    (["schema", "--bugs"], 0),
    (["schema", "--results"], 0),
    (["footprint", "deepseek-v3-tp8-decode"], 0),
])
def test_a_light_command_imports_nothing_heavy(argv: list[str], code: int) -> None:
    ran = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                         text=True, check=True)
    assert json.loads(ran.stdout.splitlines()[-1]) == [code, []], ran.stderr

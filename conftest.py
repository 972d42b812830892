"""This repository runs its scenarios through the graph-harness pytest plugin, as a kernel team's would.

`pip install -e .` registers it (the `graph_harness` pytest11 entry point); a checkout run without
installing loads it from here.
"""

import importlib.metadata

if not any(ep.value == "harness.plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]

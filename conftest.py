"""This repository runs its scenarios through the graph-harness pytest plugin, as a kernel team's would.

The plugin is the `graph_harness` pytest11 entry point that `pip install -e .` registers; the package it
imports, graph_harness, exists only once installed (harness/ is its source, under another name).
"""

import importlib.metadata

if not any(ep.value == "graph_harness.plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
    raise ImportError("graph-harness is not installed in this environment: run `pip install -e .` first")

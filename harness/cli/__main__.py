"""`python -m graph_harness.cli`: the quarantined case's child process runs the CLI this way."""

from graph_harness.cli import main

raise SystemExit(main())

"""Scenario files of every kind and what is built on them: discovery and loading, op scenarios, selections and
their runs, the bug registry and the ledger of known failures."""

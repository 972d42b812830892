"""A kernel team's own op. scale_shift.py is the op and knows nothing of graph-harness; scenarios.py holds the
factory that scenarios/own_op.yaml names."""

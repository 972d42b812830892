"""The generic core: guards, factory interception, the capture/replay protocol, comparison, verdicts,
expectations and results. It knows no kernel and no scenario file; the MoE domain and the public API
sit above it."""

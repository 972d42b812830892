"""Split-K MoE kernels that reproduce aiter's buffer contracts, each with a torch reference."""

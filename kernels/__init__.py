"""seekrl.kernels: the Kinetics cost model and block top-k sparse attention for rollouts.

- `kinetics`: eFLOPs of dense and block top-k decoding (single and multi-turn), hardware profiles, the planner.
- `block_sparse`: decode attention over sink + local + top-k KV blocks (`naive` PyTorch path, `triton` kernel).
- `attention`: `attn_implementation="seekrl_block_topk"` for transformers and the block-mean cache (importing it
  registers the implementation; it needs transformers).
"""

"""VisualRWKV training on DeepSpeed (installed as vrwkv_edge.training)."""

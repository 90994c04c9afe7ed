"""Export of vrwkv_edge models: ONNX graphs, ONNX Runtime backend, validation (installed as vrwkv_edge.export)."""

"""Kernels' pure-PyTorch forms: a per-token reference and an exact chunked form for every WKV."""

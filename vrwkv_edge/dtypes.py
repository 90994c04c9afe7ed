"""Weight dtypes by name, as the command line and the APIs accept them (the WKV state is always float32)."""
from __future__ import annotations

from typing import Union

import torch

WEIGHT_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(dtype: Union[torch.dtype, str]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return WEIGHT_DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(WEIGHT_DTYPES)}") from None

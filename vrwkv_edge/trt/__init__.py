"""TensorRT support: the plugin's headers (:mod:`.headers`), engine building (``vrwkv-edge build-trt``, :mod:`.build`)
and memory estimates (:mod:`.memory`).  Nothing here imports TensorRT at import time."""

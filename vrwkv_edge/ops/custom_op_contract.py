"""The contract of the custom-op ONNX flavour: one node per WKV in ONNX domain ``vrwkv``.

Defined once here and read by everything that emits, implements or checks these nodes: the exporter
(``vrwkv-edge export --wkv custom``), the ONNX Runtime custom-op library and the TensorRT plugin in ``csrc/``
(whose headers repeat :data:`OP_VERSION`; a test ties the two), and the runtimes that load a custom-op artefact.

Layouts are those of ``csrc/include/vrwkv/params.h`` and :mod:`vrwkv_edge.state`: token tensors ``[B, T, H, N]``
(``[B, T, C]`` for the channel-wise Bi-WKV), the recurrent state float32 ``[B, H, N, N]`` key-major
(``S[b, h, key, value]``).  ``E`` is the activation element type, one of float, float16, bfloat16, the same for
every ``E`` input of a node.  Outputs are float32 (the kernels accumulate in fp32; an fp16 graph casts after).
``T >= 1``: decode (T = 1) and prefill use the same node.

``WKV6(r, k, v, w_log, u, state_in) -> (y, state_out)``
    r, k, v, w_log: [B, T, H, N] E (w_log: the LOG decay, <= 0, -inf allowed); u (``time_faaaa``): [H, N] E;
    state_in: [B, H, N, N] float32.  y: [B, T, H, N] float32; state_out: [B, H, N, N] float32.
    y_t = r_t^T (S_{t-1} + diag(u) k_t v_t^T);  S_t = diag(exp(w_log_t)) S_{t-1} + k_t v_t^T.

``WKV7(r, w_log, k, v, a, b, state_in) -> (y, state_out)``
    r, w_log, k, v, a, b: [B, T, H, N] E; state_in / state_out, y as WKV6.
    S_t = diag(exp(w_log_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T;  y_t = S_t^T r_t.

``BiWKV(w, u, k, v) -> y``   (Vision-RWKV v1, channel-wise, no heads, no state)
    w, u: [C] float32, already divided by T (``spatial_decay / T``, ``spatial_first / T``); k, v: [B, T, C] E;
    y: [B, T, C] float32.  Attribute ``semantics`` (string): ``"official"`` (the default; the arithmetic of the
    official CUDA kernel, :func:`vrwkv_edge.ops.biwkv.bi_wkv_official_ref`) or ``"formula"``
    (:func:`vrwkv_edge.ops.biwkv.bi_wkv_ref`).

``BiWKV6(r, k, v, w_log, u) -> y``   (Vision-RWKV6, per head, no state)
    r, k, v, w_log: [B, T, H, N] E; u: [H, N] E; y: [B, T, H, N] float32 (:func:`vrwkv_edge.ops.biwkv.bi_wkv6`).

Versioning: :data:`OP_VERSION` is the domain's opset version in the model's ``opset_import``; it changes whenever
any node's inputs, outputs, attributes or arithmetic change.  An artefact records the version it was exported
with, and a library that does not implement that version is refused with a message naming both.
"""
from __future__ import annotations

DOMAIN = "vrwkv"
OP_VERSION = 1

WKV6 = "WKV6"
WKV7 = "WKV7"
BIWKV = "BiWKV"
BIWKV6 = "BiWKV6"

# Input and output names of each node, in order (the ONNX schema, the ORT kernels and the plugin fields follow).
INPUTS = {
    WKV6: ("r", "k", "v", "w_log", "u", "state_in"),
    WKV7: ("r", "w_log", "k", "v", "a", "b", "state_in"),
    BIWKV: ("w", "u", "k", "v"),
    BIWKV6: ("r", "k", "v", "w_log", "u"),
}
OUTPUTS = {
    WKV6: ("y", "state_out"),
    WKV7: ("y", "state_out"),
    BIWKV: ("y",),
    BIWKV6: ("y",),
}

BIWKV_SEMANTICS = ("official", "formula")
DEFAULT_BIWKV_SEMANTICS = "official"

# The WKV flavours an export can have: standard ONNX ops only (the default), or one node per WKV in DOMAIN.
WKV_FLAVOURS = ("standard", "custom")
DEFAULT_WKV_FLAVOUR = "standard"

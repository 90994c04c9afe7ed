/* The vrwkv ONNX Runtime custom-op library: one node per WKV in ONNX domain "vrwkv" (WKV6, WKV7, BiWKV, BiWKV6;
 * the contract is vrwkv_edge/ops/custom_op_contract.py).  Load it with
 *   Python: SessionOptions.register_custom_ops_library(path)
 *   C:      OrtApi::RegisterCustomOpsLibrary_V2(options, path)
 * Plain C so that loaders can dlopen the library and ask its version before registering it. */
#ifndef VRWKV_ORT_OPS_H_
#define VRWKV_ORT_OPS_H_

/* The domain's opset version this library implements: equal to custom_op_contract.OP_VERSION (a test ties them).
 * It changes whenever a node's inputs, outputs, attributes or arithmetic change. */
#define VRWKV_ORT_OPS_DOMAIN "vrwkv"
#define VRWKV_ORT_OPS_OP_VERSION 1

#if defined(_WIN32)
#define VRWKV_ORT_OPS_EXPORT __declspec(dllexport)
#else
#define VRWKV_ORT_OPS_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The ONNX domain and the lowest / highest opset version of it this library implements (both
 * VRWKV_ORT_OPS_OP_VERSION today).  A model whose opset_import lists the domain at a version outside
 * [min, max] must be refused before a session is created. */
VRWKV_ORT_OPS_EXPORT const char* vrwkv_ort_ops_domain(void);
VRWKV_ORT_OPS_EXPORT int vrwkv_ort_ops_min_op_version(void);
VRWKV_ORT_OPS_EXPORT int vrwkv_ort_ops_max_op_version(void);
/* "cpu" or "cpu,cuda": the execution providers the library was built with kernels for. */
VRWKV_ORT_OPS_EXPORT const char* vrwkv_ort_ops_providers(void);

#ifdef __cplusplus
}
#endif

#endif /* VRWKV_ORT_OPS_H_ */

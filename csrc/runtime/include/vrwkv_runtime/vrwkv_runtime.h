/* vrwkv_runtime: plain C API (for bindings from other languages).  Every function that can fail takes
 * `char** error`: on failure it returns NULL / a non-zero code and, if error is not NULL, stores a message
 * (allocated with malloc; release it with vrwkv_free).  Nothing here throws. */
#ifndef VRWKV_RUNTIME_H
#define VRWKV_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vrwkv_model vrwkv_model;
typedef struct vrwkv_session vrwkv_session;

typedef struct {
  const char* ort_library; /* NULL: $VRWKV_ORT_LIBRARY, then the default search */
  const char* provider;    /* "cpu" (NULL), "cuda" or "tensorrt" */
  int device_id;
  int threads;             /* 0: ONNX Runtime's default */
  int spinning;            /* 1: worker threads busy-wait between runs (ORT's default) */
  size_t max_prefill_tokens;
} vrwkv_model_options;

typedef struct {
  float temperature, top_p;
  int top_k;
  float presence_penalty, frequency_penalty, penalty_decay;
  int max_new_tokens;
  const int32_t* stop_tokens; /* NULL with n_stop_tokens 0: no stop token */
  size_t n_stop_tokens;
  int has_seed;
  uint64_t seed;
} vrwkv_sampling_params;

/* Receives each generated token and the UTF-8 text it completes (len may be 0); token -1 carries held-back
 * bytes at the end.  Return 0 to stop. */
typedef int (*vrwkv_token_callback)(int32_t token, const char* text, size_t len, void* user);

void vrwkv_model_options_init(vrwkv_model_options* o);
void vrwkv_sampling_params_init(vrwkv_sampling_params* p); /* the Python runtime's defaults, stops {261, 0} */
void vrwkv_sampling_params_greedy(vrwkv_sampling_params* p);
void vrwkv_free(void* p);

vrwkv_model* vrwkv_model_open(const char* directory, const vrwkv_model_options* options, char** error);
void vrwkv_model_close(vrwkv_model* m);
int vrwkv_model_vocab_size(const vrwkv_model* m);
int vrwkv_model_is_visual(const vrwkv_model* m);

/* Token ids of UTF-8 text; *n_ids receives the count (also when cap is too small: then returns 2). */
int vrwkv_tokenize(const vrwkv_model* m, const char* text, size_t len, int32_t* ids, size_t cap, size_t* n_ids,
                   char** error);
/* Bytes of the tokens (malloc'd, NUL-terminated; *len without the NUL).  NULL on an unknown id. */
char* vrwkv_detokenize(const vrwkv_model* m, const int32_t* ids, size_t n, size_t* len, char** error);

vrwkv_session* vrwkv_session_new(vrwkv_model* m, char** error);
void vrwkv_session_free(vrwkv_session* s);
void vrwkv_session_reset(vrwkv_session* s);
/* Logits [vocab] after the input (owned by the session, valid until its next call), or NULL on error. */
const float* vrwkv_prefill(vrwkv_session* s, const int32_t* ids, size_t n, char** error);
const float* vrwkv_decode(vrwkv_session* s, int32_t token, char** error);
/* VisualRWKV: decode, preprocess and prefill one image file (vision graph + exact image scan). */
const float* vrwkv_prefill_image_file(vrwkv_session* s, const char* path, char** error);
/* Generates from the session's logits; the generated ids (stop token excluded) go to tokens[0..cap). */
int vrwkv_generate(vrwkv_session* s, const vrwkv_sampling_params* p, vrwkv_token_callback cb, void* user,
                   int32_t* tokens, size_t cap, size_t* n_tokens, char** error);

#ifdef __cplusplus
}
#endif
#endif

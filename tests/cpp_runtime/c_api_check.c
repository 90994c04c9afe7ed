/* Built by test_api.py as C (not C++) against the installed package: the C API on a text export.
 * usage: c_api_check EXPORT_DIR PROMPT N IMAGE -> prints the greedy token ids, one line */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vrwkv_runtime/vrwkv_runtime.h>

static int count_tokens(int32_t token, const char* text, size_t len, void* user) {
  (void)text; (void)len;
  if (token >= 0) ++*(int*)user;
  return 1;
}

int main(int argc, char** argv) {
  char* err = NULL;
  int32_t ids[256], out[256];
  size_t n_ids = 0, n_out = 0;
  int streamed = 0;
  if (argc != 5) return 2;
  vrwkv_model* m = vrwkv_model_open(argv[1], NULL, &err);
  if (!m) { fprintf(stderr, "error: %s\n", err); vrwkv_free(err); return 1; }
  if (vrwkv_tokenize(m, argv[2], strlen(argv[2]), ids, 256, &n_ids, &err)) { fprintf(stderr, "error: %s\n", err); return 1; }
  vrwkv_session* s = vrwkv_session_new(m, &err);
  if (!s || !vrwkv_prefill(s, ids, n_ids, &err)) { fprintf(stderr, "error: %s\n", err); return 1; }
  vrwkv_sampling_params p;
  vrwkv_sampling_params_greedy(&p);
  p.max_new_tokens = atoi(argv[3]);
  p.n_stop_tokens = 0;
  if (vrwkv_generate(s, &p, count_tokens, &streamed, out, 256, &n_out, &err)) { fprintf(stderr, "error: %s\n", err); return 1; }
  for (size_t i = 0; i < n_out; ++i) printf("%s%d", i ? " " : "", out[i]);
  printf("\n");
  /* errors come back as messages, not crashes */
  if (vrwkv_decode(s, 1 << 20, &err) != NULL || !err || !strstr(err, "out of range")) return 3;
  vrwkv_free(err);
  if (vrwkv_prefill_image_file(s, argv[4], &err) != NULL || !strstr(err, "not a VisualRWKV export")) return 6;
  vrwkv_free(err);
  if (vrwkv_prefill_image_file(s, "/nonexistent.png", &err) != NULL || !strstr(err, "image not found")) return 7;
  vrwkv_free(err);
  if (vrwkv_model_open("/nonexistent/export", NULL, &err) != NULL || !strstr(err, "no such directory")) return 4;
  vrwkv_free(err);
  vrwkv_session_free(s);
  vrwkv_model_close(m);
  return streamed == (int)n_out ? 0 : 5;
}

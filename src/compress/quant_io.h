/* Quantized tensors in safetensors files: how a packed weight is named and described so that
 * the file still loads in any safetensors reader (only standard dtypes are used) and the
 * runtime finds everything it needs.
 *   <name>.qcodes   U8  [rows, cols * bits / 8]
 *   <name>.qscales  F16 [rows, cols / group]
 *   <name>.qzeros   U8  [rows, cols / group]   (zero-point groups only)
 * and one metadata entry "audistill.quantization": a JSON object
 *   {"format_version": 1, "tensors": {"<name>": {"bits": 4, "group_size": 128,
 *    "symmetric": false, "method": "gptq", "shape": [rows, cols]}, ...}}
 * A tensor listed there must not also be stored unquantized under <name>. */
#ifndef AUDISTILL_COMPRESS_QUANT_IO_H
#define AUDISTILL_COMPRESS_QUANT_IO_H

#include "compress/quant.h"
#include "io/safetensors.h"

#define AD_QUANT_METADATA_KEY "audistill.quantization"

typedef struct {
    char *name;
    ad_quant_spec spec;
    char method[16];
    int64_t rows, cols;
} ad_quant_entry;

typedef struct {
    int n;
    ad_quant_entry *entries;
} ad_quant_index;

/* Parses the metadata of an open file (an empty index when the file is not quantized) and
 * checks every listed tensor's parts exist with the right dtypes and shapes. */
int ad_quant_index_load(const ad_safetensors *st, ad_quant_index *index);
void ad_quant_index_free(ad_quant_index *index);
const ad_quant_entry *ad_quant_index_find(const ad_quant_index *index, const char *name);
/* A view of a quantized tensor's parts inside the mapped file (no copy; valid until close). */
int ad_quant_view(const ad_safetensors *st, const ad_quant_entry *e, ad_quant_tensor *out);

/* Builds the metadata JSON for a set of quantized tensors (caller frees). */
char *ad_quant_metadata_json(const ad_quant_entry *entries, int n);

/* One weight of a compact model directory: group format when `q` is set, else bf16 (the
 * teacher's own precision, so that size on disk is what the recipe promises). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[3];
    float *values;            /* f32 values of a kept weight: converted to bf16 in place */
    const ad_quant_tensor *q; /* the packed weight, or NULL */
    const char *method;       /* "rtn", "gptq", "qat": recorded in the metadata */
} ad_compact_weight;

/* Writes out_dir/model.safetensors from the weights (with the quantization metadata) plus the
 * config and tokenizer files of config_dir, under a temporary name renamed when complete.
 * Refuses an existing out_dir. */
int ad_compact_model_write(const ad_compact_weight *weights, int n, const char *config_dir,
                           const char *out_dir);

#endif

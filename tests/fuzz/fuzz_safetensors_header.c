/* libFuzzer target: the safetensors header parser with an arbitrary data-section size. The
 * first 8 input bytes give the data size, the rest is the header text. */
#include <stdint.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t data_size = 0;
    for (int i = 7; i >= 0; i--)
        data_size = (data_size << 8) | data[i];
    ad_st_entry *entries = NULL;
    ad_st_metadata *metadata = NULL;
    int n = 0, n_meta = 0;
    ad_safetensors_parse_header((const char *)data + 8, size - 8, data_size, "fuzz", 0, &entries,
                                &n, &metadata, &n_meta);
    ad_safetensors_free_entries(entries, n);
    ad_safetensors_free_metadata(metadata, n_meta);
    return 0;
}

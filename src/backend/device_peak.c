#include "backend/device_peak.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct {
    const char *model;   /* the model token, e.g. "H100" */
    const char *variant; /* a word of the name that selects this row ("PCIe"), NULL: any */
    double tflops;
} peak_row;

/* Variants first: a row applies to the first match in this order. */
static const peak_row PEAKS[] = {
    {"B200", NULL, 2250.0}, {"H100", "PCIe", 756.5}, {"H100", "NVL", 835.5},
    {"H100", NULL, 989.4},  {"H200", "NVL", 835.5},  {"H200", NULL, 989.4},
    {"GH200", NULL, 989.4}, {"H800", "PCIe", 756.5}, {"H800", NULL, 989.4},
    {"A100", NULL, 312.0},  {"A800", NULL, 312.0},   {"A30", NULL, 165.0},
    {"A10", NULL, 125.0},   {"L40S", NULL, 362.05},  {"L40", NULL, 181.05},
    {"L4", NULL, 121.0},
};

/* Whether `word` stands in `name` as a whole word (bounded by the ends, spaces or '-'). */
static int has_word(const char *name, const char *word) {
    const size_t n = strlen(word);
    for (const char *p = strstr(name, word); p; p = strstr(p + 1, word)) {
        const int starts = p == name || p[-1] == ' ' || p[-1] == '-';
        const int ends = p[n] == '\0' || p[n] == ' ' || p[n] == '-';
        if (starts && ends) return 1;
    }
    return 0;
}

double ad_device_peak_bf16_tflops(const char *device_name) {
    if (!device_name) return 0.0;
    for (size_t i = 0; i < sizeof PEAKS / sizeof PEAKS[0]; i++) {
        const peak_row *r = &PEAKS[i];
        if (has_word(device_name, r->model) && (!r->variant || has_word(device_name, r->variant)))
            return r->tflops;
    }
    return 0.0;
}

int ad_device_peak_for_run(const char *device_name, double *tflops) {
    *tflops = ad_device_peak_bf16_tflops(device_name);
    const char *v = getenv(AD_PEAK_TFLOPS_ENV);
    if (!v || !*v) return AD_OK;
    char *end;
    const double x = strtod(v, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (end == v || *end || !isfinite(x) || !(x > 0))
        return ad_fail("%s=%s: expected the device's peak in TFLOP/s (a positive number)",
                       AD_PEAK_TFLOPS_ENV, v);
    *tflops = x;
    return AD_OK;
}

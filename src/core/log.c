#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static ad_log_level current_level = AD_LOG_INFO;
static int current_rank = 0;
static int current_world = 1;

void ad_log_set_level(ad_log_level level) {
    current_level = level;
}
ad_log_level ad_log_get_level(void) {
    return current_level;
}

int ad_log_parse_level(const char *name, ad_log_level *out) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (ad_log_level)i;
            return AD_OK;
        }
    }
    return ad_fail("unknown log level '%s' (expected error, warn, info or debug)", name);
}

void ad_log_set_rank(int rank, int world_size) {
    current_rank = rank;
    current_world = world_size;
}

int ad_log_rank(void) {
    return current_rank;
}

void ad_log(ad_log_level level, const char *fmt, ...) {
    if (level > current_level) return;
    if (current_rank != 0 && level != AD_LOG_ERROR) return;
    static const char *tags[] = {"error", "warning", "", "debug"};
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (current_world > 1 && level == AD_LOG_ERROR)
        fprintf(stderr, "audistill[rank %d]: %s: %s\n", current_rank, tags[level], line);
    else if (level == AD_LOG_INFO)
        fprintf(stderr, "%s\n", line);
    else
        fprintf(stderr, "audistill: %s: %s\n", tags[level], line);
}

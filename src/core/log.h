/* Leveled logging to stderr. Only rank 0 prints (set once by the communicator), except
 * errors, which every rank prints with its rank number so a failing rank is identifiable. */
#ifndef AUDISTILL_CORE_LOG_H
#define AUDISTILL_CORE_LOG_H

#include "core/error.h"

typedef enum { AD_LOG_ERROR = 0, AD_LOG_WARN, AD_LOG_INFO, AD_LOG_DEBUG } ad_log_level;

void ad_log_set_level(ad_log_level level);
ad_log_level ad_log_get_level(void);
/* Parses "error|warn|info|debug"; returns AD_ERR on anything else. */
int ad_log_parse_level(const char *name, ad_log_level *out);
void ad_log_set_rank(int rank, int world_size);
int ad_log_rank(void);
void ad_log(ad_log_level level, const char *fmt, ...) AD_PRINTF(2, 3);

#define ad_error_log(...) ad_log(AD_LOG_ERROR, __VA_ARGS__)
#define ad_warn(...)      ad_log(AD_LOG_WARN, __VA_ARGS__)
#define ad_info(...)      ad_log(AD_LOG_INFO, __VA_ARGS__)
#define ad_debug(...)     ad_log(AD_LOG_DEBUG, __VA_ARGS__)

#endif

/* CPU implementation of the op table's distill_loss (see backend.h). */
#ifndef AUDISTILL_BACKEND_CPU_DISTILL_LOSS_H
#define AUDISTILL_BACKEND_CPU_DISTILL_LOSS_H

#include "backend/backend.h"

int ad_cpu_distill_loss(ad_backend *be, ad_tensor *grad, const ad_tensor *student,
                        const ad_tensor *teacher, const ad_tensor *targets,
                        const ad_distill_params *params, ad_distill_sums *sums);

#endif

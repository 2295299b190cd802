/* CPU implementations of the op table's backward ops (see backend.h), registered into a CPU
 * backend by ad_cpu_register_backward. fp32, OpenBLAS for the matrix products, OpenMP across
 * rows/heads, and no reduction whose order depends on the thread count. */
#ifndef AUDISTILL_BACKEND_CPU_BACKWARD_H
#define AUDISTILL_BACKEND_CPU_BACKWARD_H

#include "backend/backend.h"

void ad_cpu_register_backward(ad_backend *be);

#endif

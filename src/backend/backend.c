/* Backend-independent parts of the op table: destruction. Each backend's create function
 * (ad_backend_cpu_create in cpu/, the CUDA one in cuda/) fills the table. */
#include "backend/backend.h"

void ad_backend_destroy(ad_backend *be) {
    if (be && be->destroy) be->destroy(be);
}

/* Backend-independent parts of the op table: choosing a backend by name, destruction. Each
 * backend's create function (ad_backend_cpu_create in cpu/, the CUDA one in cuda/) fills the
 * table. */
#include "backend/backend.h"

#include <string.h>

#include "backend/profile.h"
#include "core/error.h"
#ifdef AUDISTILL_HAVE_CUDA
#include "../cuda/backend_cuda.h"
#endif

int ad_backend_create_for(const char *device, int n_threads, int gpu, const char *what,
                          ad_backend **out) {
    *out = NULL;
    if (strcmp(device, "cuda") != 0) return ad_backend_cpu_create(out, n_threads);
#ifdef AUDISTILL_HAVE_CUDA
    (void)what;
    AD_TRY(ad_backend_cuda_create(out, gpu));
    (*out)->act_dtype = AD_F32;
    return AD_OK;
#else
    (void)gpu;
    return ad_fail(
        "%s is cuda but this audistill was built without CUDA (cmake -DAUDISTILL_CUDA=ON)", what);
#endif
}

void ad_backend_destroy(ad_backend *be) {
    if (!be) return;
    ad_backend_profile_stop(be);
    if (be->destroy) be->destroy(be);
}

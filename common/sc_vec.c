/* sc_vec.c - room in a growable array (sc_vec.h): capacity doubling with
 * every product checked, and the caller's block untouched on failure. */
#include "common/sc_vec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

sc_err sc_vec_reserve(void *pa, size_t *cap, size_t n, size_t more, size_t es,
                      size_t first)
{
    if (*cap - n >= more) {
        return SC_OK;
    }
    if (more > SIZE_MAX - n) {
        return SC_ENOMEM;
    }
    size_t need = n + more;
    size_t nc = *cap != 0 ? *cap : first;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) {
            return SC_ENOMEM;
        }
        nc *= 2;
    }
    if (nc > SIZE_MAX / es) {
        return SC_ENOMEM;
    }
    /* The caller's pointer is read and written as bytes, so that any
     * object pointer type may stand behind pa (every object pointer has
     * void *'s representation on the platforms we build for). */
    void *old;
    memcpy(&old, pa, sizeof(old));
    void *p = realloc(old, nc * es);
    if (p == NULL) {
        return SC_ENOMEM;
    }
    memcpy(pa, &p, sizeof(p));
    *cap = nc;
    return SC_OK;
}

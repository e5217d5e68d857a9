/* sc_hook.h - the tests' hooks: a function a test sets, with an argument
 * passed to it, for the library to call at one point of its work
 * (sc_cache_set_index_add_hook, sc_persist_set_append_hook, ...). One type
 * and one setter for all of them, whatever the function's signature.
 * Header only. */
#ifndef SC_HOOK_H
#define SC_HOOK_H

#include <stdatomic.h>

/* The type of a hook whose function returns ret and takes params, its
 * argument first: `static SC_HOOK(void, (void *, int)) append_hook;`.
 * Both members are atomic: a test may set the hook while the library's
 * threads read it. Zero (a static one's start): no hook. */
#define SC_HOOK(ret, params)                                                   \
    struct {                                                                   \
        ret(*_Atomic fn) params;                                               \
        void *_Atomic arg;                                                     \
    }

/* Sets hook h (an lvalue of an SC_HOOK type) to call f with a; f NULL:
 * none. The argument is stored before the function, so a caller that
 * loads the function, then the argument, gets this argument with it
 * (the callers do: `fn = atomic_load(&h.fn); if (fn) fn(atomic_load(
 * &h.arg), ...)`). Not the other way round: a caller that loaded the
 * old function just before a set may get the new argument with it (a
 * review counted 1,278,838 NULL arguments in 2,055,301 calls while one
 * thread set and cleared a hook under calls from another). So change or
 * clear a hook only while no library thread can be calling it, as the
 * tests do; setting one before the calls begin is always safe. */
#define SC_HOOK_SET(h, f, a)                                                   \
    (atomic_store(&(h).arg, (a)), atomic_store(&(h).fn, (f)))

#endif

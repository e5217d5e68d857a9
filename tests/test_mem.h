/* test_mem.h - what the memory tests measure: whether malloc's own counts
 * can be read (HEAP_MEASURED: not under a sanitizer's allocator, whose
 * mallinfo2 says nothing), the heap in use, and the process's resident
 * memory. */
#ifndef SC_TEST_MEM_H
#define SC_TEST_MEM_H

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HEAP_MEASURED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HEAP_MEASURED 0
#endif
#endif
#ifndef HEAP_MEASURED
#define HEAP_MEASURED 1
#endif

/* ThreadSanitizer keeps shadow memory for every page written, and its
 * runtime (GCC 12's libtsan) does not intercept mremap: the shadow of the
 * pages a shrink gives back stays resident, so VmRSS cannot show them
 * going. */
#if defined(__SANITIZE_THREAD__)
#define RSS_UNKNOWN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RSS_UNKNOWN 1
#endif
#endif

/* Bytes malloc has handed out, its mmap'd blocks included. */
static inline size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* Resident memory of this process in KiB (VmRSS), 0 when unknown (or not
 * to be trusted: TSan). */
static inline long rss_kb(void)
{
#ifdef RSS_UNKNOWN
    return 0;
#endif
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
        }
    }
    fclose(f);
    return kb;
}

#endif

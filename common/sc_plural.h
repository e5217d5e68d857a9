/* sc_plural.h - the right word for a count in a message: "1 request",
 * "2 requests", "1 entry", "0 entries". Header only. */
#ifndef SC_PLURAL_H
#define SC_PLURAL_H

/* one when n is 1, else many; both are borrowed and returned as given. */
static inline const char *sc_plural(unsigned long long n, const char *one,
                                    const char *many)
{
    return n == 1 ? one : many;
}

#endif

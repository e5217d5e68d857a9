/* sc_error.c - messages and names for the codes of sc_error.h. */
#include "sc_error.h"

static const char *const messages[] = {
#define SC_ERR_MSG(code, msg) msg,
    SC_ERRORS(SC_ERR_MSG)
#undef SC_ERR_MSG
};

static const char *const names[] = {
#define SC_ERR_NAME(code, msg) #code,
    SC_ERRORS(SC_ERR_NAME)
#undef SC_ERR_NAME
};

const char *sc_strerror(int err)
{
    if (err < 0 || err >= SC_ERR_COUNT) {
        return "unknown error";
    }
    return messages[err];
}

const char *sc_errname(int err)
{
    if (err < 0 || err >= SC_ERR_COUNT) {
        return "SC_EUNKNOWN";
    }
    return names[err];
}

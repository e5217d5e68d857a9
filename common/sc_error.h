/* sc_error.h - the one error enum of semcached and its messages.
 *
 * Every fallible function returns an sc_err; 0 is success. Codes and messages
 * come from one X-macro list so that they cannot drift apart. Foreign errors
 * (errno, nng, msgpack, FAISS) are translated at the module edge. */
#ifndef SC_ERROR_H
#define SC_ERROR_H

#define SC_ERRORS(X)                                                           \
    X(SC_OK, "ok")                                                             \
    X(SC_ENOMEM, "out of memory")                                              \
    X(SC_EINVAL, "invalid argument")                                           \
    X(SC_EDIM, "vector dimension does not match the index")                    \
    X(SC_EZEROVEC, "zero vector cannot be normalised")                         \
    X(SC_ENONFINITE, "vector holds NaN or Inf")                                \
    X(SC_ENOTFOUND, "no such id")                                              \
    X(SC_EEXIST, "id already present")                                         \
    X(SC_ERANGE, "value out of range")                                         \
    X(SC_ENOTSUP, "not supported by this build or backend")                    \
    X(SC_EBACKEND, "backend library failed")                                   \
    X(SC_EFULL, "capacity reached")                                            \
    X(SC_EIO, "input/output error")                                            \
    X(SC_ENONS, "no such namespace")                                           \
    X(SC_ENSEXIST, "namespace already exists")                                 \
    X(SC_ENSFULL, "too many namespaces")                                       \
    X(SC_ESCOPEFULL, "too many scopes in namespace")                           \
    X(SC_ETOOBIG, "value exceeds its size cap")                                \
    X(SC_ECONN, "cannot reach the server")                                     \
    X(SC_ETIMEDOUT, "the server did not answer in time")                       \
    X(SC_EPROTO, "malformed reply from the server")                            \
    X(SC_EREMOTE, "the server refused the request")                            \
    X(SC_EMODEL, "the vector's embedding model differs from the namespace's")  \
    X(SC_ENOEMBED, "no embedder is loaded to turn text into a vector")         \
    X(SC_EBADFILE, "file is malformed, truncated or of another kind")          \
    X(SC_EBADVERSION, "file was written by an unsupported format version")     \
    X(SC_ECHECKSUM, "file contents do not match their checksum")               \
    X(SC_ECANCELED, "cancelled")

typedef enum sc_err {
#define SC_ERR_ENUM(code, msg) code,
    SC_ERRORS(SC_ERR_ENUM)
#undef SC_ERR_ENUM
        SC_ERR_COUNT
} sc_err;

/* Returns a static, never-NULL English message for any value, known or not. */
const char *sc_strerror(int err);

/* Returns the code's symbolic name ("SC_EDIM"), or "SC_EUNKNOWN". */
const char *sc_errname(int err);

#endif

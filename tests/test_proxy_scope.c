/* test_proxy_scope.c - the proxy's derivation of scope and text from a chat
 * completion request (sc_proxy_derive, proto/proxy.h): what must share a
 * scope does, what must not does not, each history policy, what is not
 * cacheable, and malformed requests refused. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proxy.h"

static int failures;

#define CHECK(cond, what)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what);     \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* The plan of JSON text js under policy h; aborts on a parse error. */
static sc_err plan_of(const char *js, sc_proxy_history h, sc_proxy_plan *out)
{
    json_error_t e;
    json_t *j = json_loads(js, 0, &e);
    if (j == NULL) {
        fprintf(stderr, "bad test JSON: %s: %s\n", js, e.text);
        exit(2);
    }
    char msg[256];
    sc_err rc = sc_proxy_derive(j, h, out, msg, sizeof(msg));
    json_decref(j);
    return rc;
}

/* Whether a and b (both cacheable) derive the same scope under h. */
static int same_scope(const char *a, const char *b, sc_proxy_history h)
{
    sc_proxy_plan pa, pb;
    if (plan_of(a, h, &pa) != SC_OK || plan_of(b, h, &pb) != SC_OK) {
        fprintf(stderr, "derive failed: %s | %s\n", a, b);
        exit(2);
    }
    int same = pa.cacheable && pb.cacheable && strcmp(pa.scope, pb.scope) == 0;
    sc_proxy_plan_fini(&pa);
    sc_proxy_plan_fini(&pb);
    return same;
}

#define U(t) "{\"role\":\"user\",\"content\":\"" t "\"}"
#define REQ(extra, msgs)                                                       \
    "{\"model\":\"gpt-4o-mini\"" extra ",\"messages\":[" msgs "]}"

int main(void)
{
    const sc_proxy_history E = SC_PROXY_HISTORY_EXACT;
    sc_proxy_plan p;

    /* The text is the last user message; the scope names the model. */
    CHECK(plan_of(REQ("", U("hello there")), E, &p) == SC_OK, "derive");
    CHECK(p.cacheable && p.text_len == 11 && strcmp(p.text, "hello there") == 0,
          "text = last user message");
    CHECK(strncmp(p.scope, "oai1|gpt-4o-mini|p", 18) == 0, "scope names model");
    CHECK(strlen(p.scope) < SC_CACHE_SCOPE_MAX, "scope under the cap");
    CHECK(!p.stream && !p.include_usage, "not a stream");
    /* tests/test_proxy.py (LONE_SCOPE) relies on this one. */
    CHECK(strcmp(p.scope, "oai1|gpt-4o-mini|pdaa13e4f205dc5ba|"
                          "s2d06800538d394c2|h0000000000000000") == 0,
          "the scope of a lone question");
    sc_proxy_plan_fini(&p);

    /* Same scope: another question; key order; 1 vs 1.0 for temperature;
     * parameters that do not change the answer (user, metadata, stream). */
    CHECK(same_scope(REQ("", U("a")), REQ("", U("b")), E),
          "the question is not in the scope");
    CHECK(same_scope(REQ(",\"temperature\":1,\"top_p\":0.5", U("a")),
                     REQ(",\"top_p\":0.5,\"temperature\":1.0", U("a")), E),
          "key order and 1 vs 1.0");
    CHECK(same_scope(REQ(",\"user\":\"u1\",\"metadata\":{\"x\":1}", U("a")),
                     REQ(",\"stream\":true", U("a")), E),
          "user, metadata and stream are not in the scope");

    /* Another scope for everything that changes the answer. */
    const char *diff[] = {
        ",\"temperature\":0.2",
        ",\"top_p\":0.9",
        ",\"max_tokens\":10",
        ",\"max_completion_tokens\":10",
        ",\"response_format\":{\"type\":\"json_object\"}",
        ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]",
        ",\"tool_choice\":\"none\"",
        ",\"stop\":[\"\\n\"]",
        ",\"seed\":7",
        ",\"presence_penalty\":0.5",
        ",\"frequency_penalty\":0.5",
        ",\"logit_bias\":{\"50256\":-100}",
        ",\"reasoning_effort\":\"low\"",
        /* Not named anywhere: an upstream's own parameters are scoped. */
        ",\"top_k\":1",
        ",\"chat_template_kwargs\":{\"enable_thinking\":true}",
    };
    char a[512];
    for (size_t i = 0; i < sizeof(diff) / sizeof(diff[0]); i++) {
        snprintf(a, sizeof(a), "{\"model\":\"m\"%s,\"messages\":[%s]}", diff[i],
                 U("q"));
        CHECK(!same_scope(a, "{\"model\":\"m\",\"messages\":[" U("q") "]}", E),
              diff[i]);
    }
    CHECK(!same_scope("{\"model\":\"m1\",\"messages\":[" U("q") "]}",
                      "{\"model\":\"m2\",\"messages\":[" U("q") "]}", E),
          "models apart");
    CHECK(!same_scope(
              REQ(",\"tools\":[{\"function\":{\"name\":\"f\"}}]", U("q")),
              REQ(",\"tools\":[{\"function\":{\"name\":\"g\"}}]", U("q")), E),
          "tool sets apart");
    /* The last message's other fields: alice's question is not bob's. */
#define UN(n, t) "{\"role\":\"user\",\"name\":\"" n "\",\"content\":\"" t "\"}"
    CHECK(!same_scope(REQ("", UN("alice", "what is my name?")),
                      REQ("", UN("bob", "what is my name?")), E),
          "users named apart");
    CHECK(!same_scope(REQ("", UN("alice", "q")), REQ("", U("q")), E),
          "a name vs none");
    CHECK(same_scope(REQ("", UN("alice", "q")), REQ("", UN("alice", "r")), E),
          "same name, same scope");
    CHECK(same_scope(REQ(",\"service_tier\":\"flex\",\"store\":true", U("a")),
                     REQ(",\"prompt_cache_key\":\"k\"", U("a")), E),
          "service_tier, store and prompt_cache_key are not in the scope");
#define SYS(t) "{\"role\":\"system\",\"content\":\"" t "\"}"
    CHECK(!same_scope(REQ("", SYS("be brief") "," U("q")),
                      REQ("", SYS("be long") "," U("q")), E),
          "system prompts apart");
    CHECK(!same_scope(REQ("", SYS("be brief") "," U("q")), REQ("", U("q")), E),
          "a system prompt vs none");
    CHECK(same_scope(REQ("", SYS("be brief") "," U("q")),
                     REQ("", SYS("be brief") "," U("other")), E),
          "same system prompt, same scope");

    /* Earlier turns, by policy. */
#define A(t) "{\"role\":\"assistant\",\"content\":\"" t "\"}"
    const char *t1 = REQ("", U("jacket") "," A("ok") "," U("return it?"));
    const char *t2 = REQ("", U("ticket") "," A("ok") "," U("return it?"));
    const char *t0 = REQ("", U("return it?"));
    CHECK(same_scope(t1, t1, E), "exact: identical turns share");
    CHECK(!same_scope(t1, t2, E), "exact: other turns apart");
    CHECK(!same_scope(t1, t0, E), "exact: turns vs none apart");
    CHECK(same_scope(t1, t2, SC_PROXY_HISTORY_IGNORE),
          "ignore: earlier turns ignored");
    CHECK(plan_of(t1, SC_PROXY_HISTORY_SINGLE, &p) == SC_OK && !p.cacheable &&
              strcmp(p.why_not, "multi_turn") == 0 && p.text == NULL,
          "single: multi-turn not cacheable");
    sc_proxy_plan_fini(&p);
    CHECK(same_scope(t0, t0, SC_PROXY_HISTORY_SINGLE),
          "single: a single turn is");
    CHECK(same_scope(REQ("", SYS("s") "," U("q")), REQ("", SYS("s") "," U("q")),
                     SC_PROXY_HISTORY_SINGLE),
          "single: a system message is not a turn");

    /* Not cacheable. */
    struct {
        const char *js, *why;
    } nc[] = {
        {REQ(",\"n\":2", U("q")), "n"},
        {REQ("", U("q") "," A("a")), "last_not_user"},
        {REQ("", "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                 "\"image_url\":{\"url\":\"x\"}}]}"),
         "non_text"},
        {REQ("", U("")), "empty_text"},
    };
    for (size_t i = 0; i < sizeof(nc) / sizeof(nc[0]); i++) {
        CHECK(plan_of(nc[i].js, E, &p) == SC_OK && !p.cacheable &&
                  strcmp(p.why_not, nc[i].why) == 0,
              nc[i].why);
        sc_proxy_plan_fini(&p);
    }
    /* Text parts are joined; stream options are read. */
    CHECK(plan_of(REQ(",\"stream\":true,\"stream_options\":{\"include_usage\":"
                      "true}",
                      "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                      "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}"),
                  E, &p) == SC_OK &&
              p.cacheable && strcmp(p.text, "a\nb") == 0 && p.stream &&
              p.include_usage,
          "text parts joined, stream options");
    sc_proxy_plan_fini(&p);

    /* Malformed requests. */
    const char *bad[] = {
        "[]",
        "{\"messages\":[" U("q") "]}",
        "{\"model\":5,\"messages\":[" U("q") "]}",
        "{\"model\":\"m\"}",
        "{\"model\":\"m\",\"messages\":[]}",
        "{\"model\":\"m\",\"messages\":[1]}",
        "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"stream\":\"yes\",\"messages\":[" U("q") "]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(plan_of(bad[i], E, &p) == SC_EINVAL && p.text == NULL, bad[i]);
    }

    /* The flags. */
    sc_proxy_config cfg;
    char msg[128];
    sc_proxy_config_init(&cfg);
    CHECK(sc_proxy_parse_flag(&cfg, "--proxy-history", "single", msg,
                              sizeof(msg)) == 1 &&
              cfg.history == SC_PROXY_HISTORY_SINGLE,
          "--proxy-history");
    CHECK(sc_proxy_parse_flag(&cfg, "--proxy-history", "all", msg,
                              sizeof(msg)) == -1,
          "--proxy-history bad");
    CHECK(sc_proxy_parse_flag(&cfg, "--proxy-store", "stop,length", msg,
                              sizeof(msg)) == 1 &&
              cfg.store_truncated && !cfg.store_tool_calls,
          "--proxy-store");
    CHECK(sc_proxy_parse_flag(&cfg, "--proxy-store", "stop,errors", msg,
                              sizeof(msg)) == -1,
          "--proxy-store bad");
    CHECK(sc_proxy_parse_flag(&cfg, "--upstream-timeout", "0", msg,
                              sizeof(msg)) == -1,
          "--upstream-timeout 0");
    CHECK(sc_proxy_parse_flag(&cfg, "--upstream-max-duration", "86400001", msg,
                              sizeof(msg)) == -1 &&
              strstr(msg, "--upstream-max-duration") != NULL,
          "--upstream-max-duration over a day");
    CHECK(sc_proxy_parse_flag(&cfg, "--upstream-max-duration", "600000", msg,
                              sizeof(msg)) == 1 &&
              cfg.max_duration_ms == 600000,
          "--upstream-max-duration");
    CHECK(sc_proxy_parse_flag(&cfg, "--listen", "x", msg, sizeof(msg)) == 0,
          "not a proxy flag");
    /* Each numeric flag lands in its own field (the table's offset and
     * size), the others left alone, and its top + 1 is refused in the
     * daemon's words, the field unchanged. */
    const struct {
        const char *flag, *top, *over, *refusal;
    } nums[] = {
        {"--upstream-timeout", "3600000", "3600001",
         "--upstream-timeout must be 1..3600000 ms"},
        {"--upstream-max-duration", "86400000", "86400001",
         "--upstream-max-duration must be 1..86400000 ms"},
        {"--proxy-client-timeout", "3600000", "3600001",
         "--proxy-client-timeout must be 1..3600000 ms"},
        {"--proxy-workers", "256", "257", "--proxy-workers must be 1..256"},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        sc_proxy_config_init(&cfg);
        CHECK(sc_proxy_parse_flag(&cfg, nums[i].flag, nums[i].top, msg,
                                  sizeof(msg)) == 1,
              nums[i].flag);
        unsigned long set[4] = {cfg.timeout_ms, cfg.max_duration_ms,
                                cfg.client_timeout_ms, cfg.workers};
        for (size_t j = 0; j < 4; j++) {
            CHECK(set[j] == (j == i ? strtoul(nums[i].top, NULL, 10) : 0),
                  nums[i].flag);
        }
        CHECK(sc_proxy_parse_flag(&cfg, nums[i].flag, nums[i].over, msg,
                                  sizeof(msg)) == -1 &&
                  strcmp(msg, nums[i].refusal) == 0,
              nums[i].refusal);
        unsigned long after[4] = {cfg.timeout_ms, cfg.max_duration_ms,
                                  cfg.client_timeout_ms, cfg.workers};
        CHECK(memcmp(set, after, sizeof(set)) == 0, nums[i].refusal);
    }

    if (failures == 0) {
        printf("test_proxy_scope: all passed\n");
    }
    return failures == 0 ? 0 : 1;
}

/* vote.c - the soft response vote over a lookup's top candidates (see
 * vote.h). At most SC_VOTE_MAX candidates: grouping is quadratic, on the
 * stack, which for the cache's 8 is cheaper than any hash. */
#include "cache/vote.h"

#include <math.h>

void sc_vote_params_default(sc_vote_params *p)
{
    p->tau = SC_VOTE_TAU;
    p->rho = SC_VOTE_RHO;
    p->margin = SC_VOTE_MARGIN;
    p->window = SC_VOTE_WINDOW;
}

static int same_key(const sc_vote_key *a, const sc_vote_key *b)
{
    return a->hash == b->hash && a->len == b->len;
}

int sc_vote_pick(const float *sim, const sc_vote_key *key, unsigned n,
                 float threshold, const sc_vote_params *p, sc_vote_outcome *why)
{
    sc_vote_params def;
    sc_vote_outcome out_ = SC_VOTE_NO_CANDIDATE;
    sc_vote_outcome *out = why != NULL ? why : &out_;
    if (p == NULL) {
        sc_vote_params_default(&def);
        p = &def;
    }
    if (n > SC_VOTE_MAX) {
        n = SC_VOTE_MAX;
    }
    /* The best candidate: the first with the highest similarity. */
    int top = -1;
    for (unsigned i = 0; i < n; i++) {
        if (!isnan(sim[i]) && (top < 0 || sim[i] > sim[top])) {
            top = (int)i;
        }
    }
    if (top < 0) {
        *out = SC_VOTE_NO_CANDIDATE;
        return -1;
    }
    float best = sim[top];
    if (!(best >= threshold)) {
        *out = SC_VOTE_BELOW_THRESHOLD;
        return -1;
    }
    /* One group per response: its first candidate, best candidate, vote. */
    unsigned first[SC_VOTE_MAX], lead[SC_VOTE_MAX], ng = 0;
    double vote[SC_VOTE_MAX], total = 0;
    int use_vote = p->tau > 0.0f && isfinite(p->tau);
    for (unsigned i = 0; i < n; i++) {
        if (isnan(sim[i])) {
            continue;
        }
        unsigned g = 0;
        while (g < ng && !same_key(&key[first[g]], &key[i])) {
            g++;
        }
        if (g == ng) {
            first[g] = i;
            lead[g] = i;
            vote[g] = 0;
            ng++;
        } else if (sim[i] > sim[lead[g]]) {
            lead[g] = i;
        }
        /* sim - best <= 0, so each term is in (0, 1]: no overflow. */
        int votes =
            use_vote && (!(p->window > 0.0f) || sim[i] >= best - p->window);
        double v = votes ? exp(((double)sim[i] - best) / p->tau) : 0.0;
        vote[g] += v;
        total += v;
    }
    unsigned w = 0;
    if (use_vote) {
        for (unsigned g = 1; g < ng; g++) {
            if (vote[g] > vote[w] ||
                (vote[g] == vote[w] && sim[lead[g]] > sim[lead[w]])) {
                w = g;
            }
        }
    } else {
        while (lead[w] != (unsigned)top) {
            w++; /* the group of the top candidate: it leads it */
        }
    }
    float ws = sim[lead[w]];
    int clear = ws >= threshold;
    if (clear && use_vote && p->rho > 0.0f) {
        clear = total > 0 && vote[w] >= (double)p->rho * total;
    }
    for (unsigned g = 0; clear && p->margin > 0.0f && g < ng; g++) {
        if (g != w && sim[lead[g]] >= ws - p->margin) {
            clear = 0;
        }
    }
    if (!clear) {
        *out = SC_VOTE_AMBIGUOUS;
        return -1;
    }
    *out = SC_VOTE_HIT;
    return (int)lead[w];
}

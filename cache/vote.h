/* vote.h - the semantic layer's decision rule over a lookup's top
 * candidates: which candidate (if any) a lookup serves. It generalises the
 * margin rule: candidates are grouped by response, each response gets a soft
 * vote from all its candidates, and a hit needs the winning response to
 * reach the threshold and to win clearly. Pure: no state, no allocation. */
#ifndef SC_VOTE_H
#define SC_VOTE_H

#include <stddef.h>
#include <stdint.h>

/* What identifies a response: two candidates hold the same response when
 * both fields are equal (the cache's 64-bit response hash and length). */
typedef struct sc_vote_key {
    uint64_t hash;
    uint64_t len;
} sc_vote_key;

typedef struct sc_vote_params {
    /* Soft vote: candidate i adds exp((sim[i] - best) / tau) to its
     * response's vote, best = the highest similarity. tau > 0; 0 = no vote
     * (the best candidate's response wins, share is not checked). */
    float tau;
    /* The winner's share of all votes must be >= rho (0 = not checked). */
    float rho;
    /* The margin rule: another response whose best similarity is >= the
     * winner's minus margin refuses the hit. 0 = off. */
    float margin;
    /* Only candidates with similarity >= best - window vote (the others
     * cannot be mistaken for the best). 0 = all vote. */
    float window;
} sc_vote_params;

/* The defaults, chosen on development data (bench/embed_eval.c --dev, the
 * cache files leave-one-out; see embed/README.md). */
#define SC_VOTE_TAU    0.05f
#define SC_VOTE_RHO    0.90f
#define SC_VOTE_MARGIN 0.0f
#define SC_VOTE_WINDOW 0.1f

/* Candidates judged at most; later ones are ignored. */
#define SC_VOTE_MAX 64u

typedef enum sc_vote_outcome {
    SC_VOTE_HIT = 0,
    SC_VOTE_NO_CANDIDATE = 1,    /* n == 0, or every similarity NaN */
    SC_VOTE_BELOW_THRESHOLD = 2, /* the best similarity < threshold */
    SC_VOTE_AMBIGUOUS = 3        /* reaches it, but no response wins
                                    clearly (vote share or margin) */
} sc_vote_outcome;

/* Fills *p with SC_VOTE_TAU, SC_VOTE_RHO, SC_VOTE_MARGIN, SC_VOTE_WINDOW. */
void sc_vote_params_default(sc_vote_params *p);

/* Judges n candidates: sim[i] is candidate i's similarity (as compared with
 * the threshold: the rescored cosine where there is one), key[i] its
 * response. Any order (best first is usual); NaN similarities are skipped.
 * The rule:
 *   best = max sim; if best < threshold: below threshold.
 *   vote(r) = sum over r's candidates with sim >= best - window (all
 *             when window is 0) of exp((sim - best) / tau);
 *   winner = the response with the largest vote (ties: the one with the
 *            higher best similarity, then the earlier candidate);
 *   a hit when the winner's best similarity >= threshold, its share of the
 *   votes >= rho, and no other response's best similarity is >= the
 *   winner's minus margin; else ambiguous.
 * Returns the index of the winner's best candidate (its first, on ties) to
 * serve, or -1. *why (may be NULL) receives the outcome. p NULL = the
 * defaults. sim and key are borrowed for the call only; both must hold n
 * elements (they may be NULL when n is 0). */
int sc_vote_pick(const float *sim, const sc_vote_key *key, unsigned n,
                 float threshold, const sc_vote_params *p,
                 sc_vote_outcome *why);

#endif

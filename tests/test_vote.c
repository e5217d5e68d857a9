/* test_vote.c - the decision rule over a lookup's candidates (cache/vote.h):
 * no candidate, one, all of one response, ties, NaN, threshold edges, the
 * vote share, the window and the margin, against hand-computed answers. */
#include <math.h>
#include <stdio.h>

#include "cache/vote.h"
#include "tests/test_util.h"

static const sc_vote_key A = {0x1111, 5}, B = {0x2222, 5}, C = {0x3333, 5};

static sc_vote_params prm(float tau, float rho, float margin, float window)
{
    sc_vote_params p = {tau, rho, margin, window};
    return p;
}

static void test_empty_and_one(void)
{
    sc_vote_outcome why = SC_VOTE_HIT;
    CHECK_EQ_INT(sc_vote_pick(NULL, NULL, 0, 0.5f, NULL, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_NO_CANDIDATE);
    float s1[] = {0.9f};
    sc_vote_key k1[] = {A};
    CHECK_EQ_INT(sc_vote_pick(s1, k1, 1, 0.9f, NULL, &why), 0);
    CHECK_EQ_INT(why, SC_VOTE_HIT); /* threshold edge: >= */
    CHECK_EQ_INT(sc_vote_pick(s1, k1, 1, nextafterf(0.9f, 1.0f), NULL, &why),
                 -1);
    CHECK_EQ_INT(why, SC_VOTE_BELOW_THRESHOLD);
    CHECK_EQ_INT(sc_vote_pick(s1, k1, 1, 0.5f, NULL, NULL), 0); /* why NULL */
    float nan1[] = {NAN, NAN};
    sc_vote_key k2[] = {A, B};
    CHECK_EQ_INT(sc_vote_pick(nan1, k2, 2, -1.0f, NULL, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_NO_CANDIDATE);
}

static void test_same_response(void)
{
    /* All one response: any share is 1, the best candidate is served. */
    float s[] = {0.80f, 0.95f, 0.95f, 0.60f};
    sc_vote_key k[] = {A, A, A, A};
    sc_vote_params p = prm(0.05f, 0.99f, 0.5f, 0.0f);
    sc_vote_outcome why;
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.9f, &p, &why), 1); /* first of tie */
    CHECK_EQ_INT(why, SC_VOTE_HIT);
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.96f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_BELOW_THRESHOLD);
}

static void test_vote_share(void)
{
    /* B's best is top, but A has three close candidates. tau 0.05:
     * vote(B) = 1, vote(A) = 3 e^-0.4 = 2.011; A's share 0.668. */
    float s[] = {0.92f, 0.90f, 0.90f, 0.90f};
    sc_vote_key k[] = {B, A, A, A};
    sc_vote_outcome why;
    sc_vote_params p = prm(0.05f, 0.6f, 0.0f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.85f, &p, &why), 1);
    CHECK_EQ_INT(why, SC_VOTE_HIT);
    p.rho = 0.7f;
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.85f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    /* The winner below threshold while the top reaches it: ambiguous. */
    p.rho = 0.6f;
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.91f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.93f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_BELOW_THRESHOLD);
    /* tau 0: no vote, the top's response wins and share is not checked. */
    p = prm(0.0f, 0.99f, 0.0f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 4, 0.85f, &p, &why), 0);
    CHECK_EQ_INT(why, SC_VOTE_HIT);
    /* Order does not matter: the same candidates reversed. */
    float r[] = {0.90f, 0.90f, 0.90f, 0.92f};
    sc_vote_key kr[] = {A, A, A, B};
    p = prm(0.05f, 0.6f, 0.0f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(r, kr, 4, 0.85f, &p, &why), 0);
}

static void test_ties(void)
{
    /* Two responses with equal votes and equal best: the earlier one wins
     * the vote but holds only half of it. */
    float s[] = {0.9f, 0.9f};
    sc_vote_key k[] = {A, B};
    sc_vote_outcome why;
    sc_vote_params p = prm(0.05f, 0.5f, 0.0f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 2, 0.5f, &p, &why), 0);
    p.rho = 0.51f;
    CHECK_EQ_INT(sc_vote_pick(s, k, 2, 0.5f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    /* Equal votes, different best: the higher best wins. vote(A) =
     * 1 + e^-4 ... vs B: make them equal by construction is fragile, so
     * check the margin rule on a tie instead: any margin refuses. */
    p = prm(0.0f, 0.0f, 0.01f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 2, 0.5f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    /* Same key hash, different length: different responses. */
    sc_vote_key k2[] = {{7, 1}, {7, 2}};
    CHECK_EQ_INT(sc_vote_pick(s, k2, 2, 0.5f, &p, &why), -1);
    sc_vote_key k3[] = {{7, 1}, {7, 1}};
    CHECK_EQ_INT(sc_vote_pick(s, k3, 2, 0.5f, &p, &why), 0);
}

static void test_margin_and_window(void)
{
    float s[] = {0.95f, 0.93f, 0.80f};
    sc_vote_key k[] = {A, B, C};
    sc_vote_outcome why;
    /* The old margin rule alone (no vote). */
    sc_vote_params p = prm(0.0f, 0.0f, 0.03f, 0.0f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 3, 0.9f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    p.margin = 0.01f;
    CHECK_EQ_INT(sc_vote_pick(s, k, 3, 0.9f, &p, &why), 0);
    /* Window: C (0.15 below) does not vote. tau 0.05: vote(A) = 1,
     * vote(B) = e^-0.4 = 0.670, vote(C) = e^-3 = 0.0498. Share of A:
     * 1/1.670 = 0.599 with the window 0.1, 1/1.720 = 0.581 without. */
    p = prm(0.05f, 0.59f, 0.0f, 0.1f);
    CHECK_EQ_INT(sc_vote_pick(s, k, 3, 0.9f, &p, &why), 0);
    p.window = 0.0f;
    CHECK_EQ_INT(sc_vote_pick(s, k, 3, 0.9f, &p, &why), -1);
    CHECK_EQ_INT(why, SC_VOTE_AMBIGUOUS);
    /* A far competitor alone: with the window, A's share is 1. */
    float f[] = {0.95f, 0.70f};
    p = prm(0.05f, 1.0f, 0.0f, 0.1f);
    CHECK_EQ_INT(sc_vote_pick(f, k, 2, 0.9f, &p, &why), 0);
    CHECK_EQ_INT(why, SC_VOTE_HIT);
}

static void test_defaults(void)
{
    sc_vote_params p;
    sc_vote_params_default(&p);
    CHECK(p.tau == SC_VOTE_TAU && p.rho == SC_VOTE_RHO &&
          p.margin == SC_VOTE_MARGIN && p.window == SC_VOTE_WINDOW);
    CHECK(p.tau > 0 && p.rho > 0 && p.rho <= 1 && p.window >= 0);
    /* More than SC_VOTE_MAX candidates: the rest are ignored. */
    float s[SC_VOTE_MAX + 4];
    sc_vote_key k[SC_VOTE_MAX + 4];
    for (unsigned i = 0; i < SC_VOTE_MAX + 4; i++) {
        s[i] = 0.5f;
        k[i] = A;
    }
    s[SC_VOTE_MAX + 1] = 0.99f; /* beyond the cap: never seen */
    CHECK_EQ_INT(sc_vote_pick(s, k, SC_VOTE_MAX + 4, 0.4f, NULL, NULL), 0);
}

int main(void)
{
    test_empty_and_one();
    test_same_response();
    test_vote_share();
    test_ties();
    test_margin_and_window();
    test_defaults();
    return test_summary("test_vote");
}

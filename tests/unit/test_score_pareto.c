/* Report: the Pareto frontier against an independent sweep formulation on random points with
 * many ties, hand-checked cases, run.json validation and the Markdown table's content. */
#include <math.h>
#include <time.h>

#include "core/rng.h"
#include "eval/report.h"
#include "test.h"

/* Sweep: sorted by size, a point is on the frontier iff it has the best score of its size and
 * beats every strictly smaller point. */
static void sweep_frontier(const ad_pareto_point *p, int n, bool *front) {
    for (int i = 0; i < n; i++) {
        double best_smaller = -INFINITY, best_same = -INFINITY;
        for (int j = 0; j < n; j++) {
            if (p[j].size < p[i].size && p[j].score > best_smaller) best_smaller = p[j].score;
            if (p[j].size == p[i].size && p[j].score > best_same) best_same = p[j].score;
        }
        front[i] = p[i].score == best_same && p[i].score > best_smaller;
    }
}

static void test_random_frontiers(void) {
    ad_rng rng;
    uint64_t seed = (uint64_t)time(NULL);
    ad_rng_init(&rng, seed, 0);
    printf("seed %llu\n", (unsigned long long)seed);
    int mismatches = 0, on = 0, total = 0;
    for (int round = 0; round < 500; round++) {
        int n = 1 + (int)ad_rng_below(&rng, 30);
        ad_pareto_point p[30];
        bool a[30], b[30];
        for (int i = 0; i < n; i++) /* small integer grids force equal sizes and scores */
            p[i] = (ad_pareto_point){1 + ad_rng_below(&rng, 8), ad_rng_below(&rng, 8)};
        CHECK_OK(ad_pareto_frontier(p, n, a));
        sweep_frontier(p, n, b);
        for (int i = 0; i < n; i++, total++) {
            mismatches += a[i] != b[i];
            on += a[i];
        }
    }
    CHECK_MSG(mismatches == 0, "%d of %d points disagree with the sweep", mismatches, total);
    CHECK(on > 0 && on < total);
}

static void test_hand_cases(void) {
    /* (1,10) (2,10): the larger is dominated (not smaller, not better, larger strictly).
     * (3,12) on it; (3,12) twice: equal points are both kept; (0.5,NaN) never on it. */
    ad_pareto_point p[] = {{1, 10}, {2, 10}, {3, 12}, {3, 12}, {4, 11}, {0.5, NAN}, {5, 13}};
    bool f[7];
    CHECK_OK(ad_pareto_frontier(p, 7, f));
    const bool want[7] = {true, false, true, true, false, false, true};
    for (int i = 0; i < 7; i++)
        CHECK_MSG(f[i] == want[i], "point %d", i);
    CHECK_OK(ad_pareto_frontier(NULL, 0, NULL));
}

static void test_run_json(void) {
    ad_run_info r;
    CHECK_OK(ad_run_parse("{\"name\": \"a|b\", \"bytes\": 2500000, \"parameters\": {\"bits\": 4, "
                          "\"method\": \"gptq\"}, \"scores\": {\"en-de\": {\"bleu\": 20.5, "
                          "\"chrf++\": 48}}}",
                          "x/run.json", "x", &r));
    CHECK(!strcmp(r.name, "a|b") && r.bytes == 2500000 && r.n_dirs == 1);
    CHECK(!strcmp(r.parameters, "bits=4, method=gptq"));
    CHECK(r.score[0][AD_METRIC_BLEU] == 20.5 && r.score[0][AD_METRIC_CHRFPP] == 48);
    CHECK(isnan(r.score[0][AD_METRIC_COMET]));
    ad_run_free(&r);
    CHECK_FAILS_WITH(ad_run_parse("{\"bytes\": 1, \"scores\": {\"en-de\": {\"blue\": 1}}}",
                                  "y/run.json", "y", &r),
                     "unknown score \"blue\"");
    CHECK_FAILS_WITH(ad_run_parse("{\"scores\": {}}", "y/run.json", "y", &r), "\"bytes\"");
    CHECK_FAILS_WITH(
        ad_run_parse("{\"bytes\": 5, \"scores\": {\"en/de\": {}}}", "y/run.json", "y", &r),
        "direction");
    CHECK_FAILS_WITH(ad_run_parse("[1]", "z/run.json", "z", &r), "z/run.json: not a JSON");
}

static void test_markdown(void) {
    const char *json[] = {
        "{\"name\": \"big\", \"bytes\": 9e9, \"scores\": {\"en-de\": {\"bleu\": 30}, "
        "\"en-zh\": {\"bleu\": 20, \"comet\": 0.8}}}",
        "{\"name\": \"small\", \"bytes\": 1e9, \"scores\": {\"en-de\": {\"bleu\": 10}}}",
        "{\"name\": \"mid-bad\", \"bytes\": 5e9, \"scores\": {\"en-de\": {\"bleu\": 9.5}}}",
    };
    ad_run_info runs[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(ad_run_parse(json[i], "t", "t", &runs[i]));
    char *md = ad_report_markdown(runs, 3);
    CHECK(md != NULL);
    if (!md) return;
    /* sorted by size; the en-zh column only for BLEU and COMET */
    const char *s = strstr(md, "| small |"), *m = strstr(md, "| mid-bad |"),
               *b = strstr(md, "| big |");
    CHECK(s && m && b && s < m && m < b);
    CHECK(strstr(md, "| Run | Size (MB) | Parameters | en-de BLEU | en-zh BLEU | en-zh COMET | "
                     "Pareto |"));
    CHECK(strstr(md, "| small | 1000.0 | - | 10.00 | - | - | en-de |"));
    CHECK(strstr(md, "| mid-bad | 5000.0 | - | 9.50 | - | - | - |"));
    CHECK(strstr(md, "| big | 9000.0 | - | 30.00 | 20.00 | 0.8000 | en-de, en-zh |"));
    char *gp = ad_report_gnuplot(runs, 3, "en-de", "out dir/it's.png");
    CHECK(gp && strstr(gp, "set output 'out dir/it''s.png'") && strstr(gp, "set logscale x"));
    /* frontier block in size order, the dominated run in its own (grey) block */
    const char *fb = gp ? strstr(gp, "$frontier << EOD\n1000.000000 10.0000 \"small\"\n"
                                     "9000.000000 30.0000 \"big\"\nEOD")
                        : NULL;
    CHECK(fb != NULL);
    CHECK(gp && strstr(gp, "$dominated << EOD\n5000.000000 9.5000 \"mid-bad\"\nEOD"));
    free(gp);
    CHECK(ad_report_gnuplot(runs, 3, "en-fr", "x.png") == NULL);
    free(md);
    for (int i = 0; i < 3; i++)
        ad_run_free(&runs[i]);
}

/* Percentages against a baseline, with values worked out by hand: 8/32 MB = 25%, 27/30 BLEU
 * = 90%; a run without a direction and a baseline without one show "-". */
static void test_relative(void) {
    const char *json[] = {
        "{\"name\": \"teacher\", \"bytes\": 32e6, \"scores\": {\"en-de\": {\"bleu\": 30}, "
        "\"en-zh\": {\"bleu\": 40}}}",
        "{\"name\": \"student\", \"bytes\": 8e6, \"scores\": {\"en-de\": {\"bleu\": 27}, "
        "\"en-zh\": {\"bleu\": 10}}}",
        "{\"name\": \"de-only\", \"bytes\": 48e6, \"scores\": {\"en-de\": {\"bleu\": 33}, "
        "\"en-fr\": {\"bleu\": 5}}}",
    };
    ad_run_info runs[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(ad_run_parse(json[i], "t", "t", &runs[i]));
    char *md = ad_report_relative(runs, 3, "teacher");
    CHECK(md != NULL);
    if (md) {
        CHECK(strstr(md, "## Against teacher"));
        CHECK(strstr(md, "(32.0 MB; en-de BLEU 30.00; no en-fr BLEU; en-zh BLEU 40.00)"));
        CHECK(strstr(md, "| Run | Size (% of baseline) | en-de BLEU (% of baseline) | en-fr BLEU "
                         "(% of baseline) | en-zh BLEU (% of baseline) |"));
        const char *s = strstr(md, "| student | 25.0 | 90.0 | - | 25.0 |"),
                   *t = strstr(md, "| teacher | 100.0 | 100.0 | - | 100.0 |"),
                   *d = strstr(md, "| de-only | 150.0 | 110.0 | - | - |");
        CHECK(s && t && d && s < t && t < d);
    }
    free(md);
    CHECK(ad_report_relative(runs, 3, "nobody") == NULL);
    CHECK(strstr(ad_error(), "\"nobody\" is not one of the runs") != NULL);
    for (int i = 0; i < 3; i++)
        ad_run_free(&runs[i]);
}

int main(void) {
    RUN(test_relative);
    RUN(test_random_frontiers);
    RUN(test_hand_cases);
    RUN(test_run_json);
    RUN(test_markdown);
    return test_report();
}

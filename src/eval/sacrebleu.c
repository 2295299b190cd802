#include "eval/sacrebleu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"

/* ---- code points ------------------------------------------------------------------------- */

typedef struct {
    int32_t *cp;
    int n, cap;
} cps;

static int cps_push(cps *s, int32_t c) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        int32_t *g = ad_realloc(s->cp, sizeof *g * (size_t)cap, "text");
        if (!g) return AD_ERR;
        s->cp = g, s->cap = cap;
    }
    s->cp[s->n++] = c;
    return AD_OK;
}

static int decode(const char *s, cps *out) {
    out->n = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t len = (utf8proc_ssize_t)strlen(s);
    while (len > 0) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate(p, len, &c);
        if (m <= 0) return ad_fail("scoring: the text is not valid UTF-8");
        AD_TRY(cps_push(out, c));
        p += m, len -= m;
    }
    return AD_OK;
}

static char *encode(const cps *s) {
    char *out = ad_malloc((size_t)s->n * 4 + 1, "text");
    if (!out) return NULL;
    size_t w = 0;
    for (int i = 0; i < s->n; i++)
        w += (size_t)utf8proc_encode_char(s->cp[i], (utf8proc_uint8_t *)out + w);
    out[w] = '\0';
    return out;
}

/* Python's str.isspace(). */
bool ad_py_isspace(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* ---- tokenizers --------------------------------------------------------------------------- */

static bool in_13a_class(int32_t c) { /* [\{-\~\[-\` -\&\(-\+\:-\@\/] */
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
           (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

static bool is_digit(int32_t c) {
    return c >= '0' && c <= '9';
}

/* sacreBLEU's TokenizerRegexp: four re.sub passes (each left to right, non-overlapping), then
 * ' '.join(line.split()). */
static int regexp_post(const cps *in, cps *out) {
    cps a = {0}, b = {0};
    int rc = AD_ERR;
    for (int i = 0; i < in->n; i++) {
        if (in_13a_class(in->cp[i])) {
            if (cps_push(&a, ' ') < 0 || cps_push(&a, in->cp[i]) < 0 || cps_push(&a, ' ') < 0)
                goto done;
        } else if (cps_push(&a, in->cp[i]) < 0) {
            goto done;
        }
    }
    /* ([^0-9])([\.,]) -> \1 \2 */
    for (int i = 0; i < a.n;) {
        if (i + 1 < a.n && !is_digit(a.cp[i]) && (a.cp[i + 1] == '.' || a.cp[i + 1] == ',')) {
            if (cps_push(&b, a.cp[i]) < 0 || cps_push(&b, ' ') < 0 ||
                cps_push(&b, a.cp[i + 1]) < 0 || cps_push(&b, ' ') < 0)
                goto done;
            i += 2;
        } else if (cps_push(&b, a.cp[i++]) < 0) {
            goto done;
        }
    }
    a.n = 0;
    /* ([\.,])([^0-9]) -> ' \1 \2' */
    for (int i = 0; i < b.n;) {
        if (i + 1 < b.n && (b.cp[i] == '.' || b.cp[i] == ',') && !is_digit(b.cp[i + 1])) {
            if (cps_push(&a, ' ') < 0 || cps_push(&a, b.cp[i]) < 0 || cps_push(&a, ' ') < 0 ||
                cps_push(&a, b.cp[i + 1]) < 0)
                goto done;
            i += 2;
        } else if (cps_push(&a, b.cp[i++]) < 0) {
            goto done;
        }
    }
    b.n = 0;
    /* ([0-9])(-) -> \1 \2 */
    for (int i = 0; i < a.n;) {
        if (i + 1 < a.n && is_digit(a.cp[i]) && a.cp[i + 1] == '-') {
            if (cps_push(&b, a.cp[i]) < 0 || cps_push(&b, ' ') < 0 || cps_push(&b, '-') < 0 ||
                cps_push(&b, ' ') < 0)
                goto done;
            i += 2;
        } else if (cps_push(&b, a.cp[i++]) < 0) {
            goto done;
        }
    }
    out->n = 0;
    bool in_word = false;
    for (int i = 0; i < b.n; i++) {
        if (ad_py_isspace(b.cp[i])) {
            in_word = false;
            continue;
        }
        if (!in_word && out->n > 0 && cps_push(out, ' ') < 0) goto done;
        if (cps_push(out, b.cp[i]) < 0) goto done;
        in_word = true;
    }
    rc = AD_OK;
done:
    free(a.cp), free(b.cp);
    return rc;
}

/* sacreBLEU's _UCODE_RANGES compare one-character strings with range bounds; two bounds are
 * written as 5-hex-digit escapes ('\u20000', '\u2f800'), which Python reads as two characters,
 * so those ranges are really (U+2000, U+2A6D] and (U+2F80, U+2FA1]. Reproduced as is. */
static bool zh_char(int32_t c) {
    static const int32_t ranges[][2] = {
        {0x3400, 0x4db5}, {0x4e00, 0x9fa5}, {0x9fa6, 0x9fbb}, {0xf900, 0xfa2d}, {0xfa30, 0xfa6a},
        {0xfa70, 0xfad9}, {0x2001, 0x2a6d}, {0x2f81, 0x2fa1}, {0xff00, 0xffef}, {0x2e80, 0x2eff},
        {0x3000, 0x303f}, {0x31c0, 0x31ef}, {0x2f00, 0x2fdf}, {0x2ff0, 0x2fff}, {0x3100, 0x312f},
        {0x31a0, 0x31bf}, {0xfe10, 0xfe1f}, {0xfe30, 0xfe4f}, {0x2600, 0x26ff}, {0x2700, 0x27bf},
        {0x3200, 0x32ff}, {0x3300, 0x33ff},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (c >= ranges[i][0] && c <= ranges[i][1]) return true;
    return false;
}

static int tokenize_cps(const char *line, ad_bleu_tokenizer tok, cps *out) {
    cps in = {0}, pre = {0};
    int rc = decode(line, &in);
    if (rc < 0) goto done;
    if (tok == AD_BLEU_TOK_NONE) {
        rc = AD_OK;
        out->n = 0;
        for (int i = 0; i < in.n && rc == AD_OK; i++)
            rc = cps_push(out, in.cp[i]);
        goto done;
    }
    if (tok == AD_BLEU_TOK_13A) {
        /* <skipped> removed, "-\n" joined, newlines to spaces, four entities, then ' ' + line + ' '
         */
        char *s = ad_strdup(line, "text");
        if (!s) goto done;
        const char *pats[][2] = {{"<skipped>", ""}, {"-\n", ""},   {"\n", " "},  {"&quot;", "\""},
                                 {"&amp;", "&"},    {"&lt;", "<"}, {"&gt;", ">"}};
        for (size_t k = 0; k < sizeof pats / sizeof pats[0]; k++) {
            if (k >= 3 && !strchr(s, '&')) break;
            size_t lp = strlen(pats[k][0]), lr = strlen(pats[k][1]), w = 0;
            char *o = ad_malloc(strlen(s) + 1, "text");
            if (!o) {
                free(s);
                goto done;
            }
            for (const char *p = s; *p;) {
                if (!strncmp(p, pats[k][0], lp))
                    memcpy(o + w, pats[k][1], lr), w += lr, p += lp;
                else
                    o[w++] = *p++;
            }
            o[w] = '\0';
            free(s);
            s = o;
        }
        rc = decode(s, &in);
        free(s);
        if (rc < 0) goto done;
        rc = cps_push(&pre, ' ');
        for (int i = 0; i < in.n && rc == AD_OK; i++)
            rc = cps_push(&pre, in.cp[i]);
        if (rc == AD_OK) rc = cps_push(&pre, ' ');
    } else {
        /* zh: line.strip(), then spaces around every character of the ranges */
        int a = 0, b = in.n;
        while (a < b && ad_py_isspace(in.cp[a]))
            a++;
        while (b > a && ad_py_isspace(in.cp[b - 1]))
            b--;
        rc = AD_OK;
        for (int i = a; i < b && rc == AD_OK; i++) {
            if (zh_char(in.cp[i])) {
                rc = cps_push(&pre, ' ');
                if (rc == AD_OK) rc = cps_push(&pre, in.cp[i]);
                if (rc == AD_OK) rc = cps_push(&pre, ' ');
            } else {
                rc = cps_push(&pre, in.cp[i]);
            }
        }
    }
    if (rc == AD_OK) rc = regexp_post(&pre, out);
done:
    free(in.cp), free(pre.cp);
    return rc;
}

char *ad_bleu_tokenize(const char *line, ad_bleu_tokenizer tok) {
    cps out = {0};
    char *s = tokenize_cps(line, tok, &out) == AD_OK ? encode(&out) : NULL;
    free(out.cp);
    return s;
}

/* ---- n-gram counting over int32 sequences ------------------------------------------------- */

typedef struct {
    uint64_t hash;
    int start, len, count;
} slot;

typedef struct {
    slot *slots;
    int cap;
    const int32_t *seq; /* keys are ranges of this sequence */
} counter;

static uint64_t seq_hash(const int32_t *s, int n) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)n;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint32_t)s[i]) * 1099511628211ull;
    return h | 1;
}

static int counter_init(counter *c, const int32_t *seq, int expected) {
    c->cap = 16;
    while (c->cap < expected * 2 + 2)
        c->cap *= 2;
    c->seq = seq;
    c->slots = ad_calloc((size_t)c->cap, sizeof *c->slots, "n-grams");
    return c->slots ? AD_OK : AD_ERR;
}

static slot *counter_find(const counter *c, const int32_t *key, int n, uint64_t h) {
    for (int i = (int)(h & (uint64_t)(c->cap - 1));; i = (i + 1) & (c->cap - 1)) {
        slot *s = &c->slots[i];
        if (!s->hash) return s;
        if (s->hash == h && s->len == n &&
            !memcmp(c->seq + s->start, key, sizeof(int32_t) * (size_t)n))
            return s;
    }
}

/* Counts the n-grams of length n of seq (which the counter points into). */
static void counter_fill(counter *c, int n_seq, int n) {
    for (int i = 0; i + n <= n_seq; i++) {
        uint64_t h = seq_hash(c->seq + i, n);
        slot *s = counter_find(c, c->seq + i, n, h);
        if (!s->hash) *s = (slot){h, i, n, 0};
        s->count++;
    }
}

/* hyp total, ref total, matches = sum over hyp n-grams of min(count, ref count). */
static void match_stats(const int32_t *hyp, int nh, const int32_t *ref, int nr, int n,
                        int64_t out[3]) {
    counter ch, cr;
    out[0] = nh >= n ? nh - n + 1 : 0;
    out[1] = nr >= n ? nr - n + 1 : 0;
    out[2] = 0;
    if (!out[0] || !out[1]) return;
    if (counter_init(&ch, hyp, nh) < 0) return;
    if (counter_init(&cr, ref, nr) < 0) {
        free(ch.slots);
        return;
    }
    counter_fill(&ch, nh, n);
    counter_fill(&cr, nr, n);
    for (int i = 0; i < ch.cap; i++) {
        const slot *s = &ch.slots[i];
        if (!s->hash) continue;
        const slot *r = counter_find(&cr, hyp + s->start, s->len, s->hash);
        if (r->hash) out[2] += s->count < r->count ? s->count : r->count;
    }
    free(ch.slots), free(cr.slots);
}

/* Words of a tokenized line as ids (interned per call pair so equal words get equal ids);
 * hashed, since one line of a long unsegmented talk can hold tens of thousands of words. */
typedef struct {
    char **words;
    int n, cap;
    int32_t *table; /* open addressing: word index + 1, 0 = empty */
    int table_cap;
} interner;

static uint64_t bytes_hash(const char *w, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)w[i]) * 1099511628211ull;
    return h;
}

static int intern_rehash(interner *in) {
    int cap = in->table_cap ? in->table_cap * 2 : 256;
    int32_t *t = ad_calloc((size_t)cap, sizeof *t, "word table");
    if (!t) return AD_ERR;
    for (int i = 0; i < in->n; i++) {
        int k = (int)(bytes_hash(in->words[i], strlen(in->words[i])) & (uint64_t)(cap - 1));
        while (t[k])
            k = (k + 1) & (cap - 1);
        t[k] = i + 1;
    }
    free(in->table);
    in->table = t, in->table_cap = cap;
    return AD_OK;
}

static int intern(interner *in, const char *w, size_t len, int32_t *id) {
    if ((in->n + 1) * 2 > in->table_cap) AD_TRY(intern_rehash(in));
    int k = (int)(bytes_hash(w, len) & (uint64_t)(in->table_cap - 1));
    for (; in->table[k]; k = (k + 1) & (in->table_cap - 1)) {
        const char *o = in->words[in->table[k] - 1];
        if (strlen(o) == len && !memcmp(o, w, len)) return *id = in->table[k] - 1, AD_OK;
    }
    if (in->n == in->cap) {
        int cap = in->cap ? in->cap * 2 : 64;
        char **g = ad_realloc(in->words, sizeof *g * (size_t)cap, "words");
        if (!g) return AD_ERR;
        in->words = g, in->cap = cap;
    }
    char *c = ad_malloc(len + 1, "word");
    if (!c) return AD_ERR;
    memcpy(c, w, len), c[len] = '\0';
    in->words[in->n] = c;
    in->table[k] = in->n + 1;
    *id = in->n++;
    return AD_OK;
}

static void intern_free(interner *in) {
    for (int i = 0; i < in->n; i++)
        free(in->words[i]);
    free(in->words), free(in->table);
    memset(in, 0, sizeof *in);
}

/* Splits UTF-8 `s` on Python whitespace into word ids. */
static int words_of(const char *s, interner *in, cps *ids) {
    cps c = {0};
    AD_TRY(decode(s, &c));
    ids->n = 0;
    int rc = AD_OK;
    for (int i = 0; i < c.n && rc == AD_OK;) {
        while (i < c.n && ad_py_isspace(c.cp[i]))
            i++;
        int j = i;
        while (j < c.n && !ad_py_isspace(c.cp[j]))
            j++;
        if (j > i) {
            cps word = {c.cp + i, j - i, 0};
            char *w = encode(&word);
            int32_t id;
            rc = w ? intern(in, w, strlen(w), &id) : AD_ERR;
            if (rc == AD_OK) rc = cps_push(ids, id);
            free(w);
        }
        i = j;
    }
    free(c.cp);
    return rc;
}

int ad_bleu_add(ad_bleu_stats *st, const char *hyp, const char *ref, ad_bleu_tokenizer tok) {
    char *th = ad_bleu_tokenize(hyp, tok), *tr = th ? ad_bleu_tokenize(ref, tok) : NULL;
    interner in = {0};
    cps h = {0}, r = {0};
    int rc = th && tr ? AD_OK : AD_ERR;
    if (rc == AD_OK) rc = words_of(th, &in, &h);
    if (rc == AD_OK) rc = words_of(tr, &in, &r);
    if (rc == AD_OK) {
        st->sys_len += h.n;
        st->ref_len += r.n;
        for (int n = 1; n <= AD_BLEU_MAX_ORDER; n++) {
            int64_t s[3];
            match_stats(h.cp, h.n, r.cp, r.n, n, s);
            st->total[n - 1] += s[0];
            st->correct[n - 1] += s[2];
        }
    }
    intern_free(&in);
    free(h.cp), free(r.cp), free(th), free(tr);
    return rc;
}

static double my_log(double x) {
    return x == 0 ? -9999999999.0 : log(x);
}

ad_bleu_result ad_bleu_score(const ad_bleu_stats *st, bool effective_order) {
    ad_bleu_result r;
    memset(&r, 0, sizeof r);
    r.sys_len = st->sys_len, r.ref_len = st->ref_len;
    r.bp = 1.0;
    if (st->sys_len < st->ref_len)
        r.bp = st->sys_len > 0 ? exp(1.0 - (double)st->ref_len / (double)st->sys_len) : 0.0;
    bool any = false;
    for (int n = 0; n < AD_BLEU_MAX_ORDER; n++)
        any |= st->correct[n] != 0;
    if (!any) return r;
    double smooth = 1.0;
    int eff = AD_BLEU_MAX_ORDER;
    for (int n = 1; n <= AD_BLEU_MAX_ORDER; n++) {
        if (st->total[n - 1] == 0) break;
        if (effective_order) eff = n;
        if (st->correct[n - 1] == 0) {
            smooth *= 2;
            r.precisions[n - 1] = 100.0 / (smooth * (double)st->total[n - 1]);
        } else {
            r.precisions[n - 1] = 100.0 * (double)st->correct[n - 1] / (double)st->total[n - 1];
        }
    }
    double s = 0;
    for (int n = 0; n < eff; n++)
        s += my_log(r.precisions[n]);
    r.score = r.bp * exp(s / eff);
    return r;
}

/* ---- chrF ---------------------------------------------------------------------------------- */

void ad_chrf_init(ad_chrf_stats *st, int char_order, int word_order, double beta) {
    memset(st, 0, sizeof *st);
    st->char_order = char_order, st->word_order = word_order, st->beta = beta;
}

static bool chrf_punct(int32_t c) {
    return c < 128 && c > 32 && strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", (int)c);
}

/* chrF's _remove_punctuation: a word longer than one character loses one trailing, else one
 * leading, punctuation mark as a separate word. */
static int chrf_words(const char *s, interner *in, cps *ids) {
    cps c = {0};
    AD_TRY(decode(s, &c));
    ids->n = 0;
    int rc = AD_OK;
    for (int i = 0; i < c.n && rc == AD_OK;) {
        while (i < c.n && ad_py_isspace(c.cp[i]))
            i++;
        int j = i;
        while (j < c.n && !ad_py_isspace(c.cp[j]))
            j++;
        if (j > i) {
            int parts[2][2] = {{i, j}, {0, 0}}, n_parts = 1;
            if (j - i > 1) {
                if (chrf_punct(c.cp[j - 1]))
                    parts[0][1] = j - 1, parts[1][0] = j - 1, parts[1][1] = j, n_parts = 2;
                else if (chrf_punct(c.cp[i]))
                    parts[0][1] = i + 1, parts[1][0] = i + 1, parts[1][1] = j, n_parts = 2;
            }
            for (int k = 0; k < n_parts && rc == AD_OK; k++) {
                cps word = {c.cp + parts[k][0], parts[k][1] - parts[k][0], 0};
                char *w = encode(&word);
                int32_t id;
                rc = w ? intern(in, w, strlen(w), &id) : AD_ERR;
                if (rc == AD_OK) rc = cps_push(ids, id);
                free(w);
            }
        }
        i = j;
    }
    free(c.cp);
    return rc;
}

int ad_chrf_add(ad_chrf_stats *st, const char *hyp, const char *ref) {
    cps h = {0}, r = {0}, hc = {0}, rc_ = {0};
    int rc = decode(hyp, &h);
    if (rc == AD_OK) rc = decode(ref, &r);
    /* Characters without whitespace. */
    for (int i = 0; rc == AD_OK && i < h.n; i++)
        if (!ad_py_isspace(h.cp[i])) rc = cps_push(&hc, h.cp[i]);
    for (int i = 0; rc == AD_OK && i < r.n; i++)
        if (!ad_py_isspace(r.cp[i])) rc = cps_push(&rc_, r.cp[i]);
    for (int n = 1; rc == AD_OK && n <= st->char_order; n++) {
        int64_t s[3];
        match_stats(hc.cp, hc.n, rc_.cp, rc_.n, n, s);
        if (!s[1])
            s[0] = 0; /* sacreBLEU counts no hypothesis n-grams where the reference has none */
        st->stats[n - 1][0] += s[0], st->stats[n - 1][1] += s[1], st->stats[n - 1][2] += s[2];
    }
    if (rc == AD_OK && st->word_order > 0) {
        interner in = {0};
        cps hw = {0}, rw = {0};
        rc = chrf_words(hyp, &in, &hw);
        if (rc == AD_OK) rc = chrf_words(ref, &in, &rw);
        for (int n = 1; rc == AD_OK && n <= st->word_order; n++) {
            int64_t s[3];
            match_stats(hw.cp, hw.n, rw.cp, rw.n, n, s);
            if (!s[1]) s[0] = 0;
            int k = st->char_order + n - 1;
            st->stats[k][0] += s[0], st->stats[k][1] += s[1], st->stats[k][2] += s[2];
        }
        intern_free(&in);
        free(hw.cp), free(rw.cp);
    }
    free(h.cp), free(r.cp), free(hc.cp), free(rc_.cp);
    return rc;
}

double ad_chrf_score(const ad_chrf_stats *st) {
    const double eps = 1e-16, factor = st->beta * st->beta;
    double avg_prec = 0, avg_rec = 0;
    int eff = 0;
    for (int i = 0; i < st->char_order + st->word_order; i++) {
        const double n_hyp = (double)st->stats[i][0], n_ref = (double)st->stats[i][1],
                     n_match = (double)st->stats[i][2];
        const double prec = n_hyp > 0 ? n_match / n_hyp : eps,
                     rec = n_ref > 0 ? n_match / n_ref : eps;
        if (n_hyp > 0 && n_ref > 0) avg_prec += prec, avg_rec += rec, eff++;
    }
    if (eff == 0) return 0.0;
    avg_prec /= eff, avg_rec /= eff;
    if (avg_prec + avg_rec == 0) return 0.0;
    return 100.0 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}

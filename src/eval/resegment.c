#include "eval/resegment.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "eval/sacrebleu.h"

/* ---- tokens --------------------------------------------------------------------------------
 * A token keeps its original bytes (the output is made of them) and an id shared by every
 * token with the same ASCII-lowercased bytes: mweralign folds case with the C library's
 * tolower() byte by byte, so "Über" and "über" stay different words. Id 0 is the segment
 * marker, which no word can take (mweralign's "</s>" would; a reference word "</s>" there
 * splits a segment, here it is a word). */

typedef struct {
    uint32_t id;
    uint32_t off, len; /* bytes in the owning text buffer */
} token;

typedef struct {
    token *t;
    int n, cap;
} token_list;

typedef struct {
    char *key; /* lowercased bytes */
    uint32_t len, id;
    uint64_t hash;
} vocab_slot;

typedef struct {
    vocab_slot *slots;
    uint32_t cap, n;
} vocab;

static uint64_t bytes_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h | 1;
}

static int vocab_grow(vocab *v) {
    uint32_t cap = v->cap ? v->cap * 2 : 1024;
    vocab_slot *s = ad_calloc(cap, sizeof *s, "resegment vocabulary");
    if (!s) return AD_ERR;
    for (uint32_t i = 0; i < v->cap; i++) {
        if (!v->slots[i].hash) continue;
        uint32_t k = (uint32_t)v->slots[i].hash & (cap - 1);
        while (s[k].hash)
            k = (k + 1) & (cap - 1);
        s[k] = v->slots[i];
    }
    free(v->slots);
    v->slots = s, v->cap = cap;
    return AD_OK;
}

static int vocab_id(vocab *v, const char *word, size_t len, uint32_t *id) {
    if ((v->n + 1) * 2 > v->cap) AD_TRY(vocab_grow(v));
    char small[64], *low = len < sizeof small ? small : ad_malloc(len + 1, "word");
    if (!low) return AD_ERR;
    for (size_t i = 0; i < len; i++) {
        char c = word[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    uint64_t h = bytes_hash(low, len);
    uint32_t k = (uint32_t)h & (v->cap - 1);
    while (v->slots[k].hash &&
           !(v->slots[k].hash == h && v->slots[k].len == len && !memcmp(v->slots[k].key, low, len)))
        k = (k + 1) & (v->cap - 1);
    int rc = AD_OK;
    if (!v->slots[k].hash) {
        char *key = ad_malloc(len + 1, "word");
        if (key) {
            memcpy(key, low, len), key[len] = '\0';
            v->slots[k] = (vocab_slot){key, (uint32_t)len, ++v->n, h};
        } else {
            rc = AD_ERR;
        }
    }
    if (low != small) free(low);
    *id = v->slots[k].id;
    return rc;
}

static void vocab_free(vocab *v) {
    for (uint32_t i = 0; i < v->cap; i++)
        free(v->slots[i].key);
    free(v->slots);
}

static int push_token(token_list *l, uint32_t id, size_t off, size_t len) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        token *g = ad_realloc(l->t, sizeof *g * (size_t)cap, "tokens");
        if (!g) return AD_ERR;
        l->t = g, l->cap = cap;
    }
    l->t[l->n++] = (token){id, (uint32_t)off, (uint32_t)len};
    return AD_OK;
}

/* The C++ stream extraction mweralign uses splits on the "C" locale's isspace(). */
static bool c_space(int32_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Byte range of `s` without leading and trailing Python whitespace (mweralign strips every
 * line in Python before the C++ code sees it). */
static int py_strip(const char *s, size_t *a, size_t *b) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t n = strlen(s), i = 0, first = n, last = 0;
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &c);
        if (m <= 0) return ad_fail("the text is not valid UTF-8 (byte %zu)", i + 1);
        if (!ad_py_isspace(c)) {
            if (first == n) first = i;
            last = i + (size_t)m;
        }
        i += (size_t)m;
    }
    *a = first == n ? 0 : first, *b = first == n ? 0 : last;
    return AD_OK;
}

/* Tokenizes buf[a, b) (already stripped). CHARS mode follows mweralign's CJSegmenter: a run
 * of code points <= U+00FF (plus U+2581, which it escapes into that range) is one token, any
 * other code point is a token of its own; the C++ side then still splits runs at tabs and
 * other ASCII control whitespace, which are lost. */
static int tokenize(const char *buf, size_t a, size_t b, ad_reseg_mode mode, vocab *v,
                    token_list *out) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)buf;
    size_t i = a, start = a;
    bool in_run = false;
    while (i < b) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate(p + i, (utf8proc_ssize_t)(b - i), &c);
        if (m <= 0) return ad_fail("the text is not valid UTF-8 (byte %zu)", i + 1);
        bool run_char, split;
        if (mode == AD_RESEG_WORDS) {
            split = c_space(c);
            run_char = !split;
        } else {
            split = c != ' ' && c_space(c);
            run_char = !split && (c <= 0xff || c == 0x2581);
        }
        if (in_run && !run_char) {
            uint32_t id;
            AD_TRY(vocab_id(v, buf + start, i - start, &id));
            AD_TRY(push_token(out, id, start, i - start));
            in_run = false;
        }
        if (run_char && !in_run) start = i, in_run = true;
        if (!run_char && !split) {
            uint32_t id;
            AD_TRY(vocab_id(v, buf + i, (size_t)m, &id));
            AD_TRY(push_token(out, id, i, (size_t)m));
        }
        i += (size_t)m;
    }
    if (in_run) {
        uint32_t id;
        AD_TRY(vocab_id(v, buf + start, b - start, &id));
        AD_TRY(push_token(out, id, start, b - start));
    }
    return AD_OK;
}

/* ---- the DP --------------------------------------------------------------------------------
 * Rows are reference tokens with a marker after each segment, columns hypothesis tokens.
 * One column of costs and back-pointers (the hypothesis position where the current segment
 * began) is kept; at a marker row the cell copies the cell above without cost, and its
 * back-pointer is stored as the end of the previous segment in bp[j][s] and reset to j.
 * Like mweralign: the first column counts markers as deletions, substitution wins only when
 * strictly cheaper than deletion and insertion, deletion beats insertion on ties. */

#define MARKER 0u

static int run_dp(const uint32_t *ref, size_t I, int S, const token_list *hyp, uint32_t *bound,
                  int64_t *cost) {
    size_t J = (size_t)hyp->n, cells;
    if (J == 0) {
        memset(bound, 0, sizeof *bound * ((size_t)S + 2));
        *cost = 0;
        return AD_OK;
    }
    if (ad_mul_overflows(J + 1, (size_t)S + 1, &cells) ||
        ad_mul_overflows(cells, sizeof(uint32_t), &cells) || cells > AD_RESEG_MAX_TABLE_BYTES)
        return ad_fail("a document of %zu hypothesis tokens and %d segments needs more than "
                       "%zu MB of back-pointers; split it into smaller documents",
                       J, S, AD_RESEG_MAX_TABLE_BYTES >> 20);
    uint32_t *bp = ad_calloc((J + 1) * ((size_t)S + 1), sizeof *bp, "resegment back-pointers");
    uint32_t *mc = ad_malloc(sizeof *mc * (I + 1), "resegment DP column");
    uint32_t *mb = ad_malloc(sizeof *mb * (I + 1), "resegment DP column");
    if (!bp || !mc || !mb) {
        free(bp), free(mc), free(mb);
        return AD_ERR;
    }
    for (size_t i = 0; i <= I; i++)
        mc[i] = (uint32_t)i, mb[i] = 0;
    for (size_t j = 1; j <= J; j++) {
        const uint32_t h = hyp->t[j - 1].id;
        uint32_t *bp_j = bp + j * ((size_t)S + 1);
        uint32_t cc = (uint32_t)j, cb = 0; /* the cell one row up in this column */
        mc[0] = (uint32_t)(j - 1), mb[0] = 0;
        int s = 0;
        for (size_t i = 1; i <= I; i++) {
            const uint32_t r = ref[i - 1];
            uint32_t nc, nb;
            if (r == MARKER) {
                bp_j[++s] = cb;
                nc = cc, nb = (uint32_t)j;
            } else {
                const uint32_t del = cc + 1, ins = mc[i] + 1, sub = mc[i - 1] + (r != h);
                if (sub < del) {
                    if (sub < ins)
                        nc = sub, nb = mb[i - 1];
                    else
                        nc = ins, nb = mb[i];
                } else if (del <= ins) {
                    nc = del, nb = cb;
                } else {
                    nc = ins, nb = mb[i];
                }
            }
            mc[i - 1] = cc, mb[i - 1] = cb;
            cc = nc, cb = nb;
        }
        mc[I] = cc, mb[I] = cb;
    }
    *cost = mc[I];
    /* bound[s] = hypothesis position where segment s-1 ends (bound[1] is always 0). */
    size_t k = J;
    for (int s = S; s > 0; s--) {
        bound[s] = bp[k * ((size_t)S + 1) + (size_t)s];
        k = bound[s];
    }
    free(bp), free(mc), free(mb);
    return AD_OK;
}

/* ---- output ------------------------------------------------------------------------------ */

/* Tokens [a, b) as one line: words joined by spaces, or (CHARS) concatenated and stripped as
 * CJSegmenter.decode() does. */
static char *segment_text(const char *buf, const token_list *hyp, size_t a, size_t b,
                          ad_reseg_mode mode) {
    size_t n = 1;
    for (size_t t = a; t < b; t++)
        n += hyp->t[t].len + 1;
    char *line = ad_malloc(n, "resegmented line");
    if (!line) return NULL;
    size_t w = 0;
    for (size_t t = a; t < b; t++) {
        if (mode == AD_RESEG_WORDS && t > a) line[w++] = ' ';
        memcpy(line + w, buf + hyp->t[t].off, hyp->t[t].len);
        w += hyp->t[t].len;
    }
    line[w] = '\0';
    if (mode == AD_RESEG_CHARS) {
        size_t sa = 0, sb = 0;
        if (py_strip(line, &sa, &sb) < 0) {
            free(line);
            return NULL;
        }
        memmove(line, line + sa, sb - sa);
        line[sb - sa] = '\0';
    }
    return line;
}

void ad_reseg_free(ad_reseg_result *r) {
    for (int i = 0; i < r->n_lines; i++)
        free(r->lines[i]);
    free(r->lines);
    memset(r, 0, sizeof *r);
}

int ad_resegment(const char *const *refs, int n_refs, const char *const *hyp, int n_hyp,
                 ad_reseg_mode mode, ad_reseg_result *out) {
    memset(out, 0, sizeof *out);
    if (n_refs <= 0) return ad_fail("resegment: there are no reference segments");
    vocab v = {0};
    token_list rt = {0}, ht = {0};
    uint32_t *ref = NULL, *bound = NULL;
    int *seg_end = NULL;
    char *stream = NULL;
    int rc = AD_ERR;
    /* The hypothesis: stripped lines joined by one space. */
    size_t total = 1;
    for (int i = 0; i < n_hyp; i++)
        total += strlen(hyp[i]) + 1;
    stream = ad_malloc(total, "hypothesis stream");
    if (!stream) goto done;
    size_t w = 0;
    for (int i = 0; i < n_hyp; i++) {
        size_t a = 0, b = 0;
        if (py_strip(hyp[i], &a, &b) < 0) {
            ad_fail_context("hypothesis line %d", i + 1);
            goto done;
        }
        if (i > 0) stream[w++] = ' ';
        memcpy(stream + w, hyp[i] + a, b - a);
        w += b - a;
    }
    stream[w] = '\0';
    size_t sa = 0, sb = 0;
    if (py_strip(stream, &sa, &sb) < 0 || tokenize(stream, sa, sb, mode, &v, &ht) < 0) goto done;
    if ((size_t)ht.n >= UINT32_MAX / 2) {
        ad_fail("resegment: too many hypothesis tokens (%d)", ht.n);
        goto done;
    }
    /* The references: tokens, then the marker, per segment. */
    seg_end = ad_malloc(sizeof *seg_end * (size_t)n_refs, "segment ends");
    if (!seg_end) goto done;
    for (int s = 0; s < n_refs; s++) {
        size_t a = 0, b = 0;
        if (py_strip(refs[s], &a, &b) < 0 || tokenize(refs[s], a, b, mode, &v, &rt) < 0) {
            ad_fail_context("reference line %d", s + 1);
            goto done;
        }
        seg_end[s] = rt.n;
    }
    const size_t I = (size_t)rt.n + (size_t)n_refs;
    ref = ad_malloc(sizeof *ref * I, "reference ids");
    bound = ad_calloc((size_t)n_refs + 2, sizeof *bound, "segment boundaries");
    if (!ref || !bound) goto done;
    for (int s = 0, t = 0, i = 0; s < n_refs; s++) {
        while (t < seg_end[s])
            ref[i++] = rt.t[t++].id;
        ref[i++] = MARKER;
    }
    if (run_dp(ref, I, n_refs, &ht, bound, &out->cost) < 0) goto done;
    out->lines = ad_calloc((size_t)n_refs, sizeof *out->lines, "resegmented lines");
    if (!out->lines) goto done;
    out->n_lines = n_refs;
    out->n_ref_tokens = rt.n;
    out->n_hyp_tokens = ht.n;
    /* Segment s (1-based) takes the tokens after bound[s] up to bound[s + 1], the last one
     * everything left; a back-pointer behind the previous end gives an empty line. */
    size_t beg = 0;
    for (int s = 1; s <= n_refs; s++) {
        size_t end = s < n_refs ? bound[s + 1] : (size_t)ht.n;
        if (end > (size_t)ht.n) end = (size_t)ht.n;
        out->lines[s - 1] = segment_text(stream, &ht, beg, end > beg ? end : beg, mode);
        if (!out->lines[s - 1]) goto done;
        if (s < n_refs) beg = bound[s + 1];
    }
    rc = AD_OK;
done:
    if (rc < 0) ad_reseg_free(out);
    vocab_free(&v);
    free(rt.t), free(ht.t), free(ref), free(bound), free(seg_end), free(stream);
    return rc;
}

/* The Qwen2 byte-level BPE tokenizer (see bpe.h): loading vocab.json, merges.txt and the added
 * tokens into hash maps, the pre-tokenizer pattern, BPE with a word cache, and decoding. It
 * owns no global state; a tokenizer is not safe to share between threads (cache, scratch). */
#include "text/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "io/file.h"
#include "io/hf_config.h"

/* Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2TokenizerFast):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * The reference runs it with Oniguruma, whose classes differ from PCRE2 10.42's in two ways,
 * found by matching every code point with both (tokenizers 0.23 vs PCRE2 10.42):
 * - Oniguruma's \s is Unicode White_Space; PCRE2 (UCP) also counts U+180E MONGOLIAN VOWEL
 *   SEPARATOR. PAT_WS spells out White_Space (a stable property) instead of \s.
 * - Oniguruma knows Unicode 16, PCRE2 10.42 Unicode 14: the letters and digits assigned since
 *   (CJK extensions H and I, Kawi, Garay, ...) are listed after \p{L} and \p{N}. A newer PCRE2
 *   includes them already; listing them twice is harmless. */
#define PAT_WS                                                                                     \
    "\\t\\n\\x{0b}\\f\\r "                                                                         \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define PAT_L                                                                                      \
    "\\p{L}\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}"         \
    "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}\\x{1123f}-\\x{11240}"         \
    "\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}"           \
    "\\x{113d3}\\x{11bc0}-\\x{11be0}\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}"          \
    "\\x{1342f}\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}"                    \
    "\\x{16d40}-\\x{16d6c}\\x{18cff}\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}"                     \
    "\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}\\x{2b739}"          \
    "\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}"
#define PAT_N                                                                                      \
    "\\p{N}\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}"                        \
    "\\x{11f50}-\\x{11f59}\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}\\x{1ccf0}-\\x{1ccf9}"         \
    "\\x{1d2c0}-\\x{1d2d3}\\x{1e4f0}-\\x{1e4f9}\\x{1e5f1}-\\x{1e5fa}"
#define QWEN2_PATTERN                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n" PAT_L PAT_N "]?[" PAT_L "]+|[" PAT_N                   \
    "]| ?[^" PAT_WS PAT_L PAT_N "]+[\\r\\n]*|[" PAT_WS "]*[\\r\\n]+|[" PAT_WS "]+(?![^" PAT_WS     \
    "])|[" PAT_WS "]+"

static const struct {
    const char *content;
    int id;
} QWEN2_AUDIO_SPECIALS[] = {
    {"<|endoftext|>", 151643}, {"<|im_start|>", 151644},  {"<|im_end|>", 151645},
    {"<|AUDIO|>", 151646},     {"<|audio_bos|>", 151647}, {"<|audio_eos|>", 151648},
};

/* ---- a string -> int hash map (open addressing) ---------------------------------------- */

typedef struct {
    char **keys;
    int *values;
    size_t cap, n;
} str_map;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int map_init(str_map *m, size_t expected) {
    m->cap = 16;
    while (m->cap < expected * 2)
        m->cap *= 2;
    m->n = 0;
    m->keys = ad_calloc(m->cap, sizeof *m->keys, "tokenizer map");
    m->values = ad_calloc(m->cap, sizeof *m->values, "tokenizer map");
    return m->keys && m->values ? AD_OK : AD_ERR;
}

static void map_free(str_map *m, bool free_keys) {
    if (free_keys)
        for (size_t i = 0; i < m->cap; i++)
            free(m->keys ? m->keys[i] : NULL);
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

static int *map_find(const str_map *m, const char *key, size_t len) {
    size_t i = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[i]) {
        if (strlen(m->keys[i]) == len && memcmp(m->keys[i], key, len) == 0) return &m->values[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

/* Takes ownership of key. */
static int map_put(str_map *m, char *key, int value) {
    if ((m->n + 1) * 2 > m->cap) {
        str_map bigger;
        if (map_init(&bigger, m->cap) < 0) return AD_ERR;
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) map_put(&bigger, m->keys[i], m->values[i]);
        map_free(m, false);
        *m = bigger;
    }
    size_t len = strlen(key), i = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], key) == 0) {
            free(key);
            m->values[i] = value;
            return AD_OK;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = key;
    m->values[i] = value;
    m->n++;
    return AD_OK;
}

/* ---- merges: (left id, right id) -> (rank, merged id) -------------------------------- */

typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1; 0 = empty */
    int *rank, *merged;
    size_t cap;
} pair_map;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int pairs_init(pair_map *p, size_t expected) {
    p->cap = 16;
    while (p->cap < expected * 2)
        p->cap *= 2;
    p->keys = ad_calloc(p->cap, sizeof *p->keys, "merges");
    p->rank = ad_calloc(p->cap, sizeof *p->rank, "merges");
    p->merged = ad_calloc(p->cap, sizeof *p->merged, "merges");
    return p->keys && p->rank && p->merged ? AD_OK : AD_ERR;
}

static void pairs_put(pair_map *p, int a, int b, int rank, int merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = mix(key) & (p->cap - 1);
    while (p->keys[i] && p->keys[i] != key)
        i = (i + 1) & (p->cap - 1);
    /* A repeated merge keeps its last rank, as the reference's map of merges does. */
    p->keys[i] = key;
    p->rank[i] = rank;
    p->merged[i] = merged;
}

static bool pairs_get(const pair_map *p, int a, int b, int *rank, int *merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = mix(key) & (p->cap - 1);
    while (p->keys[i]) {
        if (p->keys[i] == key) {
            *rank = p->rank[i];
            *merged = p->merged[i];
            return true;
        }
        i = (i + 1) & (p->cap - 1);
    }
    return false;
}

/* Ids beyond this are a broken file, not a vocabulary (the tables are indexed by id). */
#define MAX_ID (1 << 24)

/* ---- the tokenizer --------------------------------------------------------------------- */

struct ad_tokenizer {
    str_map vocab;      /* byte-level string -> id */
    char **id_to_token; /* id -> byte-level string (base) or content (added) */
    bool *is_special;
    int size, cap;
    pair_map merges;
    ad_added_token *added;
    int n_added;
    pcre2_code *re;
    pcre2_match_data *match;
    str_map cache; /* pre-token (raw UTF-8) -> index into cache_ids */
    int32_t *cache_ids;
    int *cache_off;
    int cache_n, cache_cap, cache_ids_n, cache_ids_cap;
    char byte_char[256][4]; /* GPT-2 bytes_to_unicode as UTF-8 */
    int unicode_to_byte[512];
    int32_t byte_id[256];    /* id of each byte's one-character token */
    bool added_first[256];   /* bytes that start an added token */
    size_t *added_len;       /* strlen of each added token's content */
    struct merge_cand *heap; /* BPE scratch, reused across words */
    int *sym, *prev, *next;
    size_t scratch_cap;
};

static void build_byte_map(ad_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 512; i++)
        t->unicode_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable =
            (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        int cp = printable ? b : 256 + n++;
        utf8proc_encode_char(cp, (utf8proc_uint8_t *)t->byte_char[b]);
        t->unicode_to_byte[cp] = b;
    }
}

static int set_token(ad_tokenizer *t, int id, const char *s, bool special) {
    if (id >= t->size) {
        /* Geometric growth: ids arrive in increasing order, 150k of them. */
        int cap = t->cap ? t->cap : 1024;
        while (cap <= id)
            cap *= 2;
        if (cap > t->cap) {
            char **g = ad_realloc(t->id_to_token, sizeof *g * (size_t)cap, "tokens");
            if (!g) return AD_ERR;
            t->id_to_token = g;
            bool *sp = ad_realloc(t->is_special, (size_t)cap, "tokens");
            if (!sp) return AD_ERR;
            t->is_special = sp;
            t->cap = cap;
        }
        for (int i = t->size; i <= id; i++)
            t->id_to_token[i] = NULL, t->is_special[i] = false;
        t->size = id + 1;
    }
    free(t->id_to_token[id]);
    t->id_to_token[id] = ad_strdup(s, "token");
    t->is_special[id] = special;
    return t->id_to_token[id] ? AD_OK : AD_ERR;
}

static int load_vocab(ad_tokenizer *t, const char *path) {
    char *text;
    size_t len;
    AD_TRY(ad_read_file(path, 256u << 20, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ad_fail("%s: expected a JSON object of token -> id", path);
    }
    int rc = map_init(&t->vocab, (size_t)cJSON_GetArraySize(root));
    for (const cJSON *kv = root->child; rc == AD_OK && kv; kv = kv->next) {
        if (!cJSON_IsNumber(kv) || kv->valuedouble < 0 || kv->valuedouble > MAX_ID ||
            kv->valuedouble != (int)kv->valuedouble) {
            rc = ad_fail("%s: token '%s' has no valid id", path, kv->string);
            break;
        }
        char *key = ad_strdup(kv->string, "token");
        rc = key ? map_put(&t->vocab, key, (int)kv->valuedouble) : AD_ERR;
        if (rc == AD_OK) rc = set_token(t, (int)kv->valuedouble, kv->string, false);
    }
    cJSON_Delete(root);
    return rc;
}

static int load_merges(ad_tokenizer *t, const char *path) {
    char **lines;
    int n;
    AD_TRY(ad_read_lines(path, &lines, &n));
    int rc = pairs_init(&t->merges, (size_t)n), rank = 0;
    for (int i = 0; rc == AD_OK && i < n; i++) {
        const char *line = lines[i];
        if (line[0] == '#' || line[0] == '\0') continue; /* "#version: 0.2" header */
        const char *sp = strchr(line, ' ');
        if (!sp || strchr(sp + 1, ' ')) {
            rc = ad_fail("%s:%d: a merge is two tokens separated by one space", path, i + 1);
            break;
        }
        size_t la = (size_t)(sp - line), lb = strlen(sp + 1);
        int *a = map_find(&t->vocab, line, la), *b = map_find(&t->vocab, sp + 1, lb);
        char joined[1024];
        if (la + lb >= sizeof joined) {
            rc = ad_fail("%s:%d: merge too long", path, i + 1);
            break;
        }
        memcpy(joined, line, la);
        memcpy(joined + la, sp + 1, lb);
        int *ab = map_find(&t->vocab, joined, la + lb);
        if (!a || !b || !ab) {
            rc = ad_fail("%s:%d: merge '%s' uses or makes a token missing from vocab.json", path,
                         i + 1, line);
            break;
        }
        pairs_put(&t->merges, *a, *b, rank++, *ab);
    }
    ad_free_lines(lines, n);
    return rc;
}

static int add_token(ad_tokenizer *t, const char *content, int id, bool special) {
    /* The first definition of a content or an id wins: tokenizer_config.json before the
     * built-in Qwen2-Audio list. */
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, content) == 0 || t->added[i].id == id) return AD_OK;
    if (!content[0]) return ad_fail("tokenizer: added token %d has empty content", id);
    if (id < 0 || id > MAX_ID) return ad_fail("tokenizer: added token '%s' has id %d", content, id);
    ad_added_token *g = ad_realloc(t->added, sizeof *g * (size_t)(t->n_added + 1), "added tokens");
    if (!g) return AD_ERR;
    t->added = g;
    size_t *lens =
        ad_realloc(t->added_len, sizeof *lens * (size_t)(t->n_added + 1), "added tokens");
    if (!lens) return AD_ERR;
    t->added_len = lens;
    lens[t->n_added] = strlen(content);
    t->added_first[(unsigned char)content[0]] = true;
    t->added[t->n_added].content = ad_strdup(content, "added token");
    t->added[t->n_added].id = id;
    t->added[t->n_added].special = special;
    if (!t->added[t->n_added].content) return AD_ERR;
    t->n_added++;
    return set_token(t, id, content, special);
}

int ad_tokenizer_load(const char *dir, int qwen2_audio_specials, ad_tokenizer **out) {
    *out = NULL;
    ad_tokenizer *t = ad_calloc(1, sizeof *t, "tokenizer");
    if (!t) return AD_ERR;
    build_byte_map(t);
    char *vocab = ad_path_join(dir, "vocab.json"), *merges = ad_path_join(dir, "merges.txt");
    char *config = ad_path_join(dir, "tokenizer_config.json");
    int rc = AD_ERR;
    if (!vocab || !merges || !config || load_vocab(t, vocab) < 0 || load_merges(t, merges) < 0)
        goto done;
    for (int b = 0; b < 256; b++) {
        const int *id = map_find(&t->vocab, t->byte_char[b], strlen(t->byte_char[b]));
        if (!id) {
            ad_fail("%s: no token for byte 0x%02x ('%s'): not a byte-level BPE vocabulary", vocab,
                    b, t->byte_char[b]);
            goto done;
        }
        t->byte_id[b] = *id;
    }
    if (ad_path_exists(config)) {
        ad_added_token *added;
        int n;
        if (ad_added_tokens_load(config, &added, &n) < 0) goto done;
        for (int i = 0; i < n; i++)
            if (add_token(t, added[i].content, added[i].id, added[i].special) < 0) {
                ad_added_tokens_free(added, n);
                goto done;
            }
        ad_added_tokens_free(added, n);
    }
    if (qwen2_audio_specials)
        for (size_t i = 0; i < sizeof QWEN2_AUDIO_SPECIALS / sizeof QWEN2_AUDIO_SPECIALS[0]; i++)
            if (add_token(t, QWEN2_AUDIO_SPECIALS[i].content, QWEN2_AUDIO_SPECIALS[i].id, true) < 0)
                goto done;
    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)QWEN2_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &err, &off, NULL);
    if (!t->re) {
        ad_fail("internal: the pre-tokenizer pattern does not compile (PCRE2 error %d at %zu)", err,
                (size_t)off);
        goto done;
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter works too */
    t->match = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!t->match || map_init(&t->cache, 4096) < 0) goto done;
    rc = AD_OK;
done:
    free(vocab), free(merges), free(config);
    if (rc < 0)
        ad_tokenizer_free(t);
    else
        *out = t;
    return rc;
}

void ad_tokenizer_free(ad_tokenizer *t) {
    if (!t) return;
    map_free(&t->vocab, true);
    map_free(&t->cache, true);
    for (int i = 0; i < t->size; i++)
        free(t->id_to_token[i]);
    free(t->id_to_token), free(t->is_special);
    free(t->merges.keys), free(t->merges.rank), free(t->merges.merged);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    if (t->match) pcre2_match_data_free(t->match);
    if (t->re) pcre2_code_free(t->re);
    free(t->cache_ids), free(t->cache_off);
    free(t->added_len);
    free(t->heap), free(t->sym), free(t->prev), free(t->next);
    free(t);
}

int ad_tokenizer_size(const ad_tokenizer *t) {
    return t->size;
}

int ad_tokenizer_token_id(const ad_tokenizer *t, const char *token) {
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, token) == 0) return t->added[i].id;
    const int *id = map_find(&t->vocab, token, strlen(token));
    return id ? *id : -1;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct {
    int32_t *ids;
    int n, cap;
} id_buf;

static int push(id_buf *b, int32_t id) {
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        int32_t *g = ad_realloc(b->ids, sizeof *g * (size_t)cap, "token ids");
        if (!g) return AD_ERR;
        b->ids = g;
        b->cap = cap;
    }
    b->ids[b->n++] = id;
    return AD_OK;
}

/* A merge candidate: the pair starting at symbol `pos`. Ordered by rank, then position, as
 * tokenizers' Word::merge_all orders its heap. */
typedef struct merge_cand {
    int rank, pos, merged;
} merge_cand;

static bool cand_before(merge_cand a, merge_cand b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(merge_cand *h, int *n, merge_cand c) {
    int i = (*n)++;
    while (i > 0 && cand_before(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static merge_cand heap_pop(merge_cand *h, int *n) {
    merge_cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_before(h[c + 1], h[c])) c++;
        if (!cand_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static int grow_scratch(ad_tokenizer *t, size_t len) {
    if (len <= t->scratch_cap) return AD_OK;
    size_t cap = len > 2 * t->scratch_cap ? len : 2 * t->scratch_cap;
    /* Every merge pushes at most two candidates after the first len - 1. */
    if (cap > (size_t)INT32_MAX / 3) return ad_fail("tokenizer: a pre-token of %zu bytes", len);
    free(t->sym), free(t->prev), free(t->next), free(t->heap);
    t->sym = ad_malloc(sizeof *t->sym * cap, "bpe");
    t->prev = ad_malloc(sizeof *t->prev * cap, "bpe");
    t->next = ad_malloc(sizeof *t->next * cap, "bpe");
    t->heap = ad_malloc(sizeof *t->heap * cap * 3, "bpe");
    t->scratch_cap = t->sym && t->prev && t->next && t->heap ? cap : 0;
    return t->scratch_cap ? AD_OK : AD_ERR;
}

/* BPE of one pre-token (raw UTF-8 bytes): symbols start as single bytes; the lowest-rank
 * adjacent pair (leftmost among equals) merges until none is mergeable. A heap of candidates
 * with lazy invalidation keeps this O(n log n): long runs without spaces (Chinese paragraphs,
 * URLs) are common and a rescan per merge is quadratic. */
static int bpe_word(ad_tokenizer *t, const char *s, size_t len, id_buf *out) {
    AD_TRY(grow_scratch(t, len));
    int *sym = t->sym, *prev = t->prev, *next = t->next, n = (int)len, nheap = 0;
    merge_cand *heap = t->heap;
    for (int i = 0; i < n; i++) {
        sym[i] = t->byte_id[(unsigned char)s[i]];
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++) {
        merge_cand c = {0, i, 0};
        if (pairs_get(&t->merges, sym[i], sym[i + 1], &c.rank, &c.merged))
            heap_push(heap, &nheap, c);
    }
    while (nheap > 0) {
        merge_cand c = heap_pop(heap, &nheap);
        /* Stale candidates: the left symbol was absorbed (sym < 0), has no right neighbour any
         * more, or the pair changed (checked through the merged id, as the reference does). */
        int right = sym[c.pos] < 0 ? -1 : next[c.pos];
        int rank, merged;
        if (right < 0 || !pairs_get(&t->merges, sym[c.pos], sym[right], &rank, &merged) ||
            merged != c.merged)
            continue;
        sym[c.pos] = c.merged;
        sym[right] = -1;
        next[c.pos] = next[right];
        if (next[right] >= 0) prev[next[right]] = c.pos;
        merge_cand d = {0, prev[c.pos], 0};
        if (d.pos >= 0 && pairs_get(&t->merges, sym[d.pos], sym[c.pos], &d.rank, &d.merged))
            heap_push(heap, &nheap, d);
        d.pos = c.pos;
        if (next[c.pos] >= 0 &&
            pairs_get(&t->merges, sym[c.pos], sym[next[c.pos]], &d.rank, &d.merged))
            heap_push(heap, &nheap, d);
    }
    for (int i = 0; i >= 0 && n > 0; i = next[i])
        AD_TRY(push(out, sym[i]));
    return AD_OK;
}

#define CACHE_LIMIT 200000

static int encode_pretoken(ad_tokenizer *t, const char *s, size_t len, id_buf *out) {
    const int *hit = map_find(&t->cache, s, len);
    if (hit) {
        for (int i = t->cache_off[*hit]; i < t->cache_off[*hit + 1]; i++)
            AD_TRY(push(out, t->cache_ids[i]));
        return AD_OK;
    }
    int start = out->n;
    AD_TRY(bpe_word(t, s, len, out));
    if (t->cache_n >= CACHE_LIMIT || len > 64) return AD_OK;
    int count = out->n - start;
    if (t->cache_n + 2 > t->cache_cap) {
        int cap = t->cache_cap ? t->cache_cap * 2 : 1024;
        int *g = ad_realloc(t->cache_off, sizeof *g * (size_t)cap, "tokenizer cache");
        if (!g) return AD_ERR;
        t->cache_off = g;
        t->cache_cap = cap;
        if (t->cache_n == 0) t->cache_off[0] = 0;
    }
    if (t->cache_ids_n + count > t->cache_ids_cap) {
        int cap = (t->cache_ids_n + count) * 2 + 1024;
        int32_t *g = ad_realloc(t->cache_ids, sizeof *g * (size_t)cap, "tokenizer cache");
        if (!g) return AD_ERR;
        t->cache_ids = g;
        t->cache_ids_cap = cap;
    }
    memcpy(t->cache_ids + t->cache_ids_n, out->ids + start, sizeof(int32_t) * (size_t)count);
    t->cache_ids_n += count;
    char *key = ad_malloc(len + 1, "tokenizer cache");
    if (!key) return AD_ERR;
    memcpy(key, s, len);
    key[len] = '\0';
    if (memchr(s, '\0', len)) {
        free(key); /* keys are C strings: a NUL inside is not cached */
        t->cache_ids_n -= count;
        return AD_OK;
    }
    AD_TRY(map_put(&t->cache, key, t->cache_n));
    t->cache_n++;
    t->cache_off[t->cache_n] = t->cache_ids_n;
    return AD_OK;
}

/* Splits a stretch of ordinary text with the pattern and encodes every piece. */
static int encode_text(ad_tokenizer *t, const char *s, size_t len, id_buf *out) {
    PCRE2_SIZE at = 0;
    while (at < len) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, len, at, PCRE2_NO_UTF_CHECK, t->match, NULL);
        if (rc < 0) {
            if (rc == PCRE2_ERROR_NOMATCH) break;
            return ad_fail("tokenizer: the pre-tokenizer regex failed (PCRE2 error %d)", rc);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
        if (ov[1] == ov[0]) { /* cannot happen with this pattern, but never loop forever */
            do
                at++;
            while (at < len && ((unsigned char)s[at] & 0xc0) == 0x80);
            continue;
        }
        /* "isolated" splitting: text between matches is its own piece too. */
        if (ov[0] > at) AD_TRY(encode_pretoken(t, s + at, ov[0] - at, out));
        AD_TRY(encode_pretoken(t, s + ov[0], ov[1] - ov[0], out));
        at = ov[1];
    }
    if (at < len) AD_TRY(encode_pretoken(t, s + at, len - at, out));
    return AD_OK;
}

int ad_tokenizer_encode(ad_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    /* Validate first: the reference refuses invalid UTF-8 too. */
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, NULL, 0, 0) < 0)
        return ad_fail("tokenizer: the text is not valid UTF-8");
    id_buf out = {0};
    int rc = AD_OK;
    size_t seg = 0, i = 0;
    /* Added tokens are matched on the raw text, longest first, before normalisation. */
    while (i <= len && rc == AD_OK) {
        int found = -1;
        size_t flen = 0;
        if (i < len && t->added_first[(unsigned char)text[i]])
            for (int k = 0; k < t->n_added; k++) {
                size_t l = t->added_len[k];
                if (l > flen && i + l <= len && memcmp(text + i, t->added[k].content, l) == 0)
                    found = k, flen = l;
            }
        if (found < 0 && i < len) {
            i++;
            continue;
        }
        bool ascii = true; /* ASCII is NFC already: skip the copy */
        for (size_t k = seg; k < i && ascii; k++)
            ascii = (unsigned char)text[k] < 0x80;
        if (i > seg && ascii) {
            rc = encode_text(t, text + seg, i - seg, &out);
        } else if (i > seg) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m =
                utf8proc_map((const utf8proc_uint8_t *)text + seg, (utf8proc_ssize_t)(i - seg),
                             &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0)
                rc = ad_fail("tokenizer: cannot normalise the text: %s", utf8proc_errmsg(m));
            else
                rc = encode_text(t, (const char *)nfc, (size_t)m, &out);
            free(nfc);
        }
        if (found < 0) break;
        if (rc == AD_OK) rc = push(&out, t->added[found].id);
        i += flen;
        seg = i;
    }
    if (rc < 0) {
        free(out.ids);
        return rc;
    }
    *ids = out.ids;
    *n = out.n;
    return AD_OK;
}

/* ---- decoding -------------------------------------------------------------------------- */

/* Appends `bytes` as UTF-8, each maximal invalid subpart replaced by one U+FFFD, as Rust's
 * String::from_utf8_lossy (the reference) and CPython's errors="replace" both do. */
static size_t append_replaced(char *dst, const unsigned char *src, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate(src + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l > 0) {
            memcpy(dst + w, src + i, (size_t)l);
            w += (size_t)l;
            i += (size_t)l;
            continue;
        }
        /* CPython consumes the longest valid prefix of a broken sequence as one error. */
        size_t skip = 1;
        unsigned char c = src[i];
        int need = c >= 0xf0 && c <= 0xf4   ? 3
                   : c >= 0xe0 && c <= 0xef ? 2
                   : c >= 0xc2 && c <= 0xdf ? 1
                                            : 0;
        for (int k = 1; k <= need && i + (size_t)k < n; k++) {
            unsigned char d = src[i + (size_t)k];
            unsigned char lo = 0x80, hi = 0xbf;
            if (k == 1 && c == 0xe0) lo = 0xa0;
            if (k == 1 && c == 0xed) hi = 0x9f;
            if (k == 1 && c == 0xf0) lo = 0x90;
            if (k == 1 && c == 0xf4) hi = 0x8f;
            if (d < lo || d > hi) break;
            skip++;
        }
        memcpy(dst + w, "\xef\xbf\xbd", 3);
        w += 3;
        i += skip;
    }
    return w;
}

/* As tokenizers' ByteLevel decoder: a token whose characters all come from the byte map
 * becomes those bytes, any other token (an added token such as "<|im_end|>" is both: ASCII maps
 * to itself) its own UTF-8; the bytes of the whole sequence are then decoded at once, so a
 * character split across tokens comes back whole and only truly broken bytes become U+FFFD. */
int ad_tokenizer_drop_unknown(const ad_tokenizer *t, int32_t *ids, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->size && t->id_to_token[ids[i]]) ids[k++] = ids[i];
    return k;
}

int ad_tokenizer_decode(const ad_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **text) {
    size_t len;
    return ad_tokenizer_decode_len(t, ids, n, skip_special, text, &len);
}

int ad_tokenizer_decode_len(const ad_tokenizer *t, const int32_t *ids, int n, int skip_special,
                            char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    size_t cap = 1;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->size || !t->id_to_token[ids[i]])
            return ad_fail("tokenizer: id %d is not in the vocabulary (%d ids)", ids[i], t->size);
        cap += strlen(t->id_to_token[ids[i]]);
    }
    unsigned char *bytes = ad_malloc(cap, "decode");
    char *out = ad_malloc(cap * 3, "decode"); /* each byte becomes at most U+FFFD */
    if (!bytes || !out) {
        free(bytes), free(out);
        return AD_ERR;
    }
    size_t nb = 0;
    for (int i = 0; i < n; i++) {
        if (skip_special && t->is_special[ids[i]]) continue;
        const unsigned char *s = (const unsigned char *)t->id_to_token[ids[i]];
        size_t l = strlen((const char *)s), start = nb;
        for (size_t k = 0; k < l;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t m = utf8proc_iterate(s + k, (utf8proc_ssize_t)(l - k), &cp);
            if (m <= 0 || cp >= 512 || t->unicode_to_byte[cp] < 0) {
                memcpy(bytes + start, s, l);
                nb = start + l;
                break;
            }
            bytes[nb++] = (unsigned char)t->unicode_to_byte[cp];
            k += (size_t)m;
        }
    }
    size_t w = append_replaced(out, bytes, nb);
    out[w] = '\0';
    free(bytes);
    *text = out;
    *len = w;
    return AD_OK;
}

int ad_tokenizer_added_tokens(const ad_tokenizer *t, const ad_added_token **tokens) {
    *tokens = t->added;
    return t->n_added;
}

/* Checkpoint directories: crash-safe writing, verification, `--resume auto` lookup, the
 * structured state and the config check; see checkpoint.h for the layout and guarantees. */
#define _GNU_SOURCE /* renameat2 */
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"

static const char *FILES[] = {"model.safetensors", "optimizer.safetensors", "config.json"};
enum { N_FILES = 3, MAX_STATE_BYTES = 256 << 20, PATH_CAP = 4352 };

const char *const AD_CKPT_FAULT_POINTS[] = {"begin",
                                            "after_model",
                                            "after_optimizer",
                                            "after_config",
                                            "after_state",
                                            "before_rename",
                                            "after_rename",
                                            "after_latest",
                                            "during_prune",
                                            "end",
                                            NULL};

/* ---- fault injection ---------------------------------------------------------------------- */

static void fault_point(const char *name) {
    static int hits[16];
    const char *at = getenv("AUDISTILL_FAULT_AT");
    if (!at || !*at) return;
    const size_t len = strcspn(at, ":");
    if (strlen(name) != len || strncmp(at, name, len) != 0) return;
    const long count = at[len] == ':' ? strtol(at + len + 1, NULL, 10) : 1;
    for (int i = 0; AD_CKPT_FAULT_POINTS[i] && i < 16; i++)
        if (!strcmp(AD_CKPT_FAULT_POINTS[i], name) && ++hits[i] == (count > 0 ? count : 1))
            raise(SIGKILL);
}

/* ---- small helpers ------------------------------------------------------------------------ */

static int remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? AD_OK : AD_ERR;
    if (!S_ISDIR(sb.st_mode)) return unlink(path) == 0 ? AD_OK : AD_ERR;
    DIR *d = opendir(path);
    if (!d) return AD_ERR;
    struct dirent *e;
    int rc = AD_OK;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = ad_path_join(path, e->d_name);
        if (!p || remove_tree(p) < 0) rc = AD_ERR;
        free(p);
    }
    closedir(d);
    return rmdir(path) == 0 ? rc : AD_ERR;
}

/* "step_<digits>" exactly; -1 otherwise (temporaries, leftovers, `latest`). */
static int64_t step_of_name(const char *name) {
    if (strncmp(name, "step_", 5) != 0 || !name[5]) return -1;
    int64_t s = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || s > (INT64_MAX - 9) / 10) return -1;
        s = s * 10 + (*p - '0');
    }
    return s;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

static char *u64_text(uint64_t v, char buf[24]) {
    snprintf(buf, 24, "%" PRIu64, v);
    return buf;
}

/* A JSON string holding a decimal uint64 (doubles cannot hold all of them). */
static int get_u64(const cJSON *obj, const char *key, uint64_t *out, const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char *end;
    if (!cJSON_IsString(v) || !*v->valuestring || *v->valuestring == '-')
        return ad_fail("%s: \"%s\" is not a decimal string", where, key);
    errno = 0;
    const unsigned long long x = strtoull(v->valuestring, &end, 10);
    if (*end || errno) return ad_fail("%s: \"%s\" is not a decimal string", where, key);
    *out = (uint64_t)x;
    return AD_OK;
}

static int get_i64(const cJSON *obj, const char *key, int64_t *out, const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return ad_fail("%s: \"%s\" is not a non-negative integer", where, key);
    *out = (int64_t)v->valuedouble;
    return AD_OK;
}

/* CRC-32 of the compact form of `state` without its "state_crc32": cJSON prints a parsed tree
 * exactly as it printed the tree it came from, so writer and reader agree. */
static int state_crc(cJSON *state, uint32_t *crc) {
    cJSON *own = cJSON_DetachItemFromObjectCaseSensitive(state, "state_crc32");
    char *text = cJSON_PrintUnformatted(state);
    if (own) cJSON_AddItemToObject(state, "state_crc32", own);
    if (!text) return ad_fail("out of memory printing state.json");
    *crc = ad_crc32(0, text, strlen(text));
    free(text);
    return AD_OK;
}

/* ---- config hash and differences ----------------------------------------------------------- */

static bool ignored(const char *key, const char *const *ignore) {
    for (int i = 0; ignore && ignore[i]; i++)
        if (!strcmp(key, ignore[i])) return true;
    return false;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp(((const ad_kv *)a)->key, ((const ad_kv *)b)->key);
}

uint64_t ad_config_hash(const ad_kv *kv, int n, const char *const *ignore) {
    ad_kv *sorted = n > 0 ? malloc(sizeof *sorted * (size_t)n) : NULL;
    if (n > 0 && !sorted) return 0; /* cannot happen at config sizes; 0 never matches */
    if (n > 0) memcpy(sorted, kv, sizeof *sorted * (size_t)n);
    if (n > 1) qsort(sorted, (size_t)n, sizeof *sorted, cmp_kv);
    uint64_t h = 1469598103934665603ull;
#define FNV(c) (h = (h ^ (unsigned char)(c)) * 1099511628211ull)
    for (int i = 0; i < n; i++) {
        if (ignored(sorted[i].key, ignore)) continue;
        for (const char *p = sorted[i].key; *p; p++)
            FNV(*p);
        FNV('=');
        for (const char *p = sorted[i].value ? sorted[i].value : ""; *p; p++)
            FNV(*p);
        FNV('\n');
    }
#undef FNV
    free(sorted);
    return h;
}

static const ad_kv *find_kv(const ad_kv *kv, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(kv[i].key, key)) return &kv[i];
    return NULL;
}

int ad_config_diff(const ad_kv *ckpt, int n_ckpt, const ad_kv *job, int n_job,
                   const char *const *ignore, char *buf, size_t size) {
    int n = 0;
    size_t w = 0;
    if (size) buf[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const ad_kv *x = pass ? job : ckpt, *y = pass ? ckpt : job;
        const int nx = pass ? n_job : n_ckpt, ny = pass ? n_ckpt : n_job;
        for (int i = 0; i < nx; i++) {
            if (ignored(x[i].key, ignore)) continue;
            const ad_kv *o = find_kv(y, ny, x[i].key);
            if (pass == 1 && o) continue; /* reported in the first pass */
            if (o && !strcmp(o->value ? o->value : "", x[i].value ? x[i].value : "")) continue;
            n++;
            if (w < size)
                w += (size_t)snprintf(buf + w, size - w, "%s%s (checkpoint: %s, job: %s)",
                                      n > 1 ? "; " : "", x[i].key, pass ? "absent" : x[i].value,
                                      pass ? x[i].value : (o ? o->value : "absent"));
        }
    }
    return n;
}

int ad_checkpoint_check_config(const char *ckpt_dir, const ad_ckpt_state *st, const ad_kv *job,
                               int n_job, const char *const *ignore, bool force) {
    char diff[2048];
    const int n = ad_config_diff(st->config, st->n_config, job, n_job, ignore, diff, sizeof diff);
    if (n == 0) return AD_OK;
    if (force) {
        ad_warn("resuming %s with a different job config (forced): %s", ckpt_dir, diff);
        return AD_OK;
    }
    return ad_fail("checkpoint %s was made with a different job config: %d key%s differ: %s (use "
                   "--force to resume anyway)",
                   ckpt_dir, n, n == 1 ? "" : "s", diff);
}

/* ---- writing -------------------------------------------------------------------------------- */

static int write_text(const char *dir, const char *name, const char *text) {
    char *p = ad_path_join(dir, name);
    const int rc = p ? ad_write_file_atomic(p, text, strlen(text)) : AD_ERR;
    free(p);
    return rc;
}

/* Leftovers of writers that are gone: step_N.tmp.<pid>, .old.<pid>, .del.<pid>, latest.tmp.<pid>.
 * A live pid's leftovers may be another writer's work in progress and stay. */
static void remove_leftovers(const char *ck_dir) {
    DIR *d = opendir(ck_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *kinds[] = {".tmp.", ".old.", ".del."};
        for (int k = 0; k < 3; k++) {
            const char *at = strstr(e->d_name, kinds[k]);
            if (!at) continue;
            char *end;
            const long pid = strtol(at + 5, &end, 10);
            if (pid <= 0 || *end || (pid != (long)getpid() && kill((pid_t)pid, 0) == 0)) break;
            char *p = ad_path_join(ck_dir, e->d_name);
            if (p && remove_tree(p) < 0) ad_warn("cannot remove the leftover %s", p);
            free(p);
            break;
        }
    }
    closedir(d);
}

static int cmp_desc(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Keeps the new checkpoint and the newest keep-1 others (all when keep <= 0), then removes
 * the leftovers of dead writers. */
static void prune(const char *ck_dir, int64_t new_step, int keep) {
    DIR *d = keep > 0 ? opendir(ck_dir) : NULL;
    if (!d) {
        remove_leftovers(ck_dir);
        return;
    }
    int64_t *steps = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const int64_t s = step_of_name(e->d_name);
        if (s < 0 || s == new_step) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            int64_t *grown = realloc(steps, sizeof *steps * (size_t)cap);
            if (!grown) break;
            steps = grown;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (n > 1) qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
    for (int i = keep - 1; i < n; i++) {
        char from[PATH_CAP], aside[PATH_CAP];
        snprintf(from, sizeof from, "%s/step_%08lld", ck_dir, (long long)steps[i]);
        snprintf(aside, sizeof aside, "%s.del.%ld", from, (long)getpid());
        if (rename(from, aside) != 0) {
            ad_warn("cannot remove the old checkpoint %s: %s", from, strerror(errno));
            continue;
        }
        fault_point("during_prune");
        if (remove_tree(aside) < 0) ad_warn("cannot remove the old checkpoint %s", aside);
    }
    free(steps);
    remove_leftovers(ck_dir);
}

/* The common writer: `state` gets format_version, step, files and state_crc32. */
static int save(const char *run_dir, int64_t step, const ad_st_write_item *model, int n_model,
                const ad_st_write_item *optimizer, int n_optimizer, const char *config_json,
                cJSON *state, int keep, char **out_dir) {
    char ck_dir[PATH_CAP], tmp[PATH_CAP], final[PATH_CAP], old[PATH_CAP], path[PATH_CAP];
    if (out_dir) *out_dir = NULL;
    if (step < 0) return ad_fail("checkpoint: negative step %lld", (long long)step);
    snprintf(ck_dir, sizeof ck_dir, "%s/checkpoints", run_dir);
    AD_TRY(ad_mkdir_p(ck_dir));
    snprintf(final, sizeof final, "%s/step_%08lld", ck_dir, (long long)step);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", final, (long)getpid());
    snprintf(old, sizeof old, "%s.old.%ld", final, (long)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return ad_fail("cannot create %s: %s", tmp, strerror(errno));
    int rc = AD_ERR;
    fault_point("begin");
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    const ad_st_metadata meta[] = {{"format", "pt"}};
    if (ad_safetensors_write(path, model, n_model, meta, 1) < 0) goto done;
    fault_point("after_model");
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    if (ad_safetensors_write(path, optimizer, n_optimizer, meta, 1) < 0) goto done;
    fault_point("after_optimizer");
    if (write_text(tmp, "config.json", config_json ? config_json : "{}") < 0) goto done;
    fault_point("after_config");
    const char *own[] = {"format_version", "step", "files", "state_crc32"};
    for (int i = 0; i < 4; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(state, own[i]);
    cJSON_AddNumberToObject(state, "format_version", AD_CHECKPOINT_FORMAT);
    cJSON_AddNumberToObject(state, "step", (double)step);
    cJSON *files = cJSON_AddObjectToObject(state, "files");
    for (int i = 0; i < N_FILES && files; i++) {
        uint32_t crc;
        uint64_t size;
        snprintf(path, sizeof path, "%s/%s", tmp, FILES[i]);
        if (ad_file_crc32(path, &crc, &size) < 0) goto done;
        cJSON *f = cJSON_AddObjectToObject(files, FILES[i]);
        if (!f || !cJSON_AddNumberToObject(f, "bytes", (double)size) ||
            !cJSON_AddNumberToObject(f, "crc32", crc))
            files = NULL;
    }
    uint32_t self = 0;
    if (!files || state_crc(state, &self) < 0 ||
        !cJSON_AddNumberToObject(state, "state_crc32", self)) {
        ad_fail("out of memory building state.json");
        goto done;
    }
    char *text = cJSON_Print(state);
    const int w =
        text ? write_text(tmp, "state.json", text) : ad_fail("out of memory writing state.json");
    free(text);
    if (w < 0) goto done;
    fault_point("after_state");
    if (ad_fsync_directory(tmp) < 0) goto done;
    fault_point("before_rename");
    /* Rewriting a step (a resumed run passing it again): swapped atomically where the
     * filesystem can, else the old one moves aside first (then, killed in between, the step
     * is missing and the lookup takes the one before). */
    const bool replacing = ad_path_exists(final);
    bool swapped = false;
    if (replacing) {
        swapped = renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0;
        if (!swapped && rename(final, old) != 0) {
            ad_fail("cannot move the existing %s aside: %s", final, strerror(errno));
            goto done;
        }
    }
    if (!swapped && rename(tmp, final) != 0) {
        ad_fail("cannot rename %s to %s: %s", tmp, final, strerror(errno));
        if (replacing) rename(old, final);
        goto done;
    }
    if (ad_fsync_directory(ck_dir) < 0) goto done;
    if (replacing) remove_tree(swapped ? tmp : old);
    fault_point("after_rename");
    char line[64];
    snprintf(line, sizeof line, "%s\n", base_name(final));
    if (write_text(ck_dir, "latest", line) < 0) goto done;
    fault_point("after_latest");
    prune(ck_dir, step, keep);
    fault_point("end");
    if (out_dir && !(*out_dir = ad_strdup(final, "path"))) goto done;
    rc = AD_OK;
done:
    if (rc < 0) remove_tree(tmp);
    return rc < 0 ? ad_fail_context("writing checkpoint %s", final) : AD_OK;
}

int ad_checkpoint_save(const char *run_dir, int64_t step, const ad_st_write_item *model,
                       int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                       const char *config_json, const char *state_json, int keep) {
    cJSON *state = cJSON_Parse(state_json ? state_json : "{}");
    if (!cJSON_IsObject(state)) {
        cJSON_Delete(state);
        return ad_fail("internal: checkpoint state is not a JSON object");
    }
    const int rc =
        save(run_dir, step, model, n_model, optimizer, n_optimizer, config_json, state, keep, NULL);
    cJSON_Delete(state);
    return rc;
}

static cJSON *state_to_json(const ad_ckpt_state *st) {
    cJSON *s = cJSON_CreateObject(), *rng = cJSON_AddArrayToObject(s, "rng");
    char a[24], b[24], c[24];
    bool ok = rng != NULL;
    for (int i = 0; ok && i < st->n_rng; i++) {
        cJSON *r = cJSON_CreateObject();
        ok = r && cJSON_AddItemToArray(rng, r) &&
             cJSON_AddStringToObject(r, "name", st->rng[i].name) &&
             cJSON_AddStringToObject(r, "seed", u64_text(st->rng[i].rng.seed, a)) &&
             cJSON_AddStringToObject(r, "stream", u64_text(st->rng[i].rng.stream, b)) &&
             cJSON_AddStringToObject(r, "position", u64_text(st->rng[i].rng.position, c));
    }
    cJSON *data = ok ? cJSON_AddObjectToObject(s, "data") : NULL;
    ok = data && cJSON_AddNumberToObject(data, "epoch", (double)st->cursor.epoch) &&
         cJSON_AddNumberToObject(data, "index", (double)st->cursor.index) &&
         cJSON_AddStringToObject(data, "shuffle_seed", u64_text(st->cursor.shuffle_seed, a));
    snprintf(a, sizeof a, "%016" PRIx64, ad_config_hash(st->config, st->n_config, NULL));
    cJSON *cfg = ok && cJSON_AddStringToObject(s, "config_hash", a)
                     ? cJSON_AddObjectToObject(s, "config")
                     : NULL;
    ok = cfg != NULL;
    for (int i = 0; ok && i < st->n_config; i++)
        ok = cJSON_AddStringToObject(cfg, st->config[i].key,
                                     st->config[i].value ? st->config[i].value : "") != NULL;
    if (!ok) cJSON_Delete(s), s = NULL;
    return s;
}

int ad_checkpoint_write(const char *run_dir, const ad_ckpt_state *st, const ad_st_write_item *model,
                        int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                        const char *config_json, int keep, char **out_dir) {
    if (st->n_rng < 0 || st->n_rng > AD_CKPT_MAX_RNG)
        return ad_fail("checkpoint: %d RNG streams (at most %d)", st->n_rng, AD_CKPT_MAX_RNG);
    if (st->cursor.epoch < 0 || st->cursor.index < 0)
        return ad_fail("checkpoint: negative data cursor");
    cJSON *state = state_to_json(st);
    if (!state) return ad_fail("out of memory building state.json");
    const int rc = save(run_dir, st->step, model, n_model, optimizer, n_optimizer, config_json,
                        state, keep, out_dir);
    cJSON_Delete(state);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------------------
 */

/* Parses and fully verifies dir's state.json; *out owns the tree. */
static int verified_state(const char *dir, cJSON **out) {
    char path[PATH_CAP];
    *out = NULL;
    snprintf(path, sizeof path, "%s/state.json", dir);
    if (!ad_path_exists(path))
        return ad_fail("checkpoint %s is incomplete: it has no state.json (a write that did not "
                       "finish?)",
                       dir);
    char *text;
    size_t len;
    if (ad_read_file(path, MAX_STATE_BYTES, &text, &len) < 0)
        return ad_fail_context("checkpoint %s", dir);
    cJSON *state = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = AD_ERR;
    uint32_t crc = 0;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(state, "format_version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(state, "files");
    const cJSON *self = cJSON_GetObjectItemCaseSensitive(state, "state_crc32");
    if (!cJSON_IsObject(state)) {
        ad_fail("checkpoint %s: state.json is corrupt (not valid JSON)", dir);
        goto done;
    }
    if (!cJSON_IsNumber(version)) {
        ad_fail("checkpoint %s: state.json has no format_version", dir);
        goto done;
    }
    if (version->valuedouble != AD_CHECKPOINT_FORMAT) {
        ad_fail("checkpoint %s: format version %g, this build reads version %d", dir,
                version->valuedouble, AD_CHECKPOINT_FORMAT);
        goto done;
    }
    if (!cJSON_IsNumber(self) || state_crc(state, &crc) < 0 || (double)crc != self->valuedouble) {
        ad_fail("checkpoint %s: state.json fails its CRC-32 check (corrupt or edited)", dir);
        goto done;
    }
    int64_t step = -1, named = step_of_name(base_name(dir));
    if (get_i64(state, "step", &step, "state.json") < 0) {
        ad_fail_context("checkpoint %s", dir);
        goto done;
    }
    if (named >= 0 && named != step) {
        ad_fail("checkpoint %s: state.json says step %lld, the directory's name another", dir,
                (long long)step);
        goto done;
    }
    for (int i = 0; i < N_FILES; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(files, FILES[i]);
        const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(f, "bytes"),
                    *want = cJSON_GetObjectItemCaseSensitive(f, "crc32");
        if (!cJSON_IsNumber(bytes) || !cJSON_IsNumber(want)) {
            ad_fail("checkpoint %s: state.json does not record %s", dir, FILES[i]);
            goto done;
        }
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        if (!ad_path_exists(path)) {
            ad_fail("checkpoint %s is incomplete: %s is missing", dir, FILES[i]);
            goto done;
        }
        uint32_t got;
        uint64_t size;
        if (ad_file_crc32(path, &got, &size) < 0) {
            ad_fail_context("checkpoint %s", dir);
            goto done;
        }
        if ((double)size != bytes->valuedouble) {
            ad_fail("checkpoint %s: %s is %llu bytes, state.json says %.0f (truncated or "
                    "incomplete)",
                    dir, FILES[i], (unsigned long long)size, bytes->valuedouble);
            goto done;
        }
        if ((double)got != want->valuedouble) {
            ad_fail("checkpoint %s: %s fails its CRC-32 check (corrupt)", dir, FILES[i]);
            goto done;
        }
    }
    rc = AD_OK;
done:
    if (rc == AD_OK)
        *out = state;
    else
        cJSON_Delete(state);
    return rc;
}

int ad_checkpoint_verify(const char *dir) {
    cJSON *state;
    AD_TRY(verified_state(dir, &state));
    cJSON_Delete(state);
    return AD_OK;
}

int ad_checkpoint_state(const char *dir, char **state_json) {
    char path[PATH_CAP];
    size_t len;
    snprintf(path, sizeof path, "%s/state.json", dir);
    return ad_read_file(path, MAX_STATE_BYTES, state_json, &len);
}

void ad_ckpt_state_free(ad_ckpt_state *st) {
    for (int i = 0; i < st->n_config; i++)
        free((void *)st->config[i].key), free((void *)st->config[i].value);
    free(st->config);
    memset(st, 0, sizeof *st);
}

static int parse_state(const cJSON *s, ad_ckpt_state *st) {
    AD_TRY(get_i64(s, "step", &st->step, "state.json"));
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(s, "rng"), *r;
    if (rng && !cJSON_IsArray(rng)) return ad_fail("state.json: \"rng\" is not a list");
    cJSON_ArrayForEach(r, rng) {
        if (st->n_rng == AD_CKPT_MAX_RNG)
            return ad_fail("state.json: more than %d RNG streams", AD_CKPT_MAX_RNG);
        ad_ckpt_rng *o = &st->rng[st->n_rng++];
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(r, "name");
        if (!cJSON_IsString(name) || strlen(name->valuestring) >= sizeof o->name)
            return ad_fail("state.json: RNG stream %d has no name", st->n_rng - 1);
        strcpy(o->name, name->valuestring);
        AD_TRY(get_u64(r, "seed", &o->rng.seed, "state.json rng"));
        AD_TRY(get_u64(r, "stream", &o->rng.stream, "state.json rng"));
        AD_TRY(get_u64(r, "position", &o->rng.position, "state.json rng"));
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(s, "data");
    if (data) {
        AD_TRY(get_i64(data, "epoch", &st->cursor.epoch, "state.json data"));
        AD_TRY(get_i64(data, "index", &st->cursor.index, "state.json data"));
        AD_TRY(get_u64(data, "shuffle_seed", &st->cursor.shuffle_seed, "state.json data"));
        st->has_cursor = true;
    }
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(s, "config_hash");
    if (cJSON_IsString(hash)) st->config_hash = strtoull(hash->valuestring, NULL, 16);
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(s, "config"), *kv;
    if (cfg && !cJSON_IsObject(cfg)) return ad_fail("state.json: \"config\" is not an object");
    const int n = cfg ? cJSON_GetArraySize(cfg) : 0;
    if (n > 0 && !(st->config = ad_calloc((size_t)n, sizeof *st->config, "config"))) return AD_ERR;
    cJSON_ArrayForEach(kv, cfg) {
        if (!cJSON_IsString(kv))
            return ad_fail("state.json: config key %s is not a string", kv->string);
        ad_kv *o = &st->config[st->n_config++];
        o->key = ad_strdup(kv->string, "config");
        o->value = ad_strdup(kv->valuestring, "config");
        if (!o->key || !o->value) return AD_ERR;
    }
    return AD_OK;
}

int ad_checkpoint_load(const char *dir, ad_ckpt_state *st) {
    memset(st, 0, sizeof *st);
    cJSON *state;
    AD_TRY(verified_state(dir, &state));
    const int rc = parse_state(state, st);
    cJSON_Delete(state);
    if (rc < 0) {
        ad_ckpt_state_free(st);
        return ad_fail_context("checkpoint %s", dir);
    }
    return AD_OK;
}

int ad_checkpoint_find(const char *where, char **out) {
    *out = NULL;
    char path[PATH_CAP], ck_dir[PATH_CAP];
    snprintf(path, sizeof path, "%s/state.json", where);
    if (ad_path_exists(path) || step_of_name(base_name(where)) >= 0) {
        AD_TRY(ad_checkpoint_verify(where));
        *out = ad_strdup(where, "path");
        return *out ? AD_OK : AD_ERR;
    }
    snprintf(ck_dir, sizeof ck_dir, "%s/checkpoints", where);
    if (!ad_is_directory(ck_dir)) {
        snprintf(path, sizeof path, "%s/latest", where);
        if (!ad_path_exists(path)) return AD_OK;      /* a fresh run */
        snprintf(ck_dir, sizeof ck_dir, "%s", where); /* given the checkpoints directory */
    }
    snprintf(path, sizeof path, "%s/latest", ck_dir);
    if (ad_path_exists(path)) {
        char *latest = NULL;
        size_t len;
        if (ad_read_file(path, 4096, &latest, &len) == AD_OK) {
            latest[strcspn(latest, "\r\n")] = '\0';
            char *dir = step_of_name(latest) >= 0 ? ad_path_join(ck_dir, latest) : NULL;
            if (dir && ad_checkpoint_verify(dir) == AD_OK) {
                free(latest);
                *out = dir;
                return AD_OK;
            }
            if (dir)
                ad_warn("%s names a checkpoint that does not verify (%s); looking for the newest "
                        "complete one",
                        path, ad_error());
            else
                ad_warn("%s does not name a checkpoint ('%s'); looking for the newest complete one",
                        path, latest);
            free(dir);
        }
        free(latest);
    }
    /* `latest` missing or broken: the newest step directory that verifies. */
    DIR *d = opendir(ck_dir);
    if (!d) return ad_fail("cannot list %s: %s", ck_dir, strerror(errno));
    int64_t best = -1;
    int seen = 0;
    struct dirent *e;
    char first_error[512] = "";
    while ((e = readdir(d))) {
        const int64_t s = step_of_name(e->d_name);
        if (s < 0) continue;
        seen++;
        if (s <= best) continue;
        char *dir = ad_path_join(ck_dir, e->d_name);
        if (dir && ad_checkpoint_verify(dir) == AD_OK)
            best = s;
        else if (!first_error[0])
            snprintf(first_error, sizeof first_error, "%s", ad_error());
        free(dir);
    }
    closedir(d);
    if (best < 0 && seen == 0) return AD_OK; /* nothing was ever completed */
    if (best < 0)
        return ad_fail("%s holds no complete checkpoint (%d refused; e.g. %s)", ck_dir, seen,
                       first_error);
    snprintf(path, sizeof path, "step_%08lld", (long long)best);
    *out = ad_path_join(ck_dir, path);
    return *out ? AD_OK : AD_ERR;
}

/* ---- tensors of flat arenas ----------------------------------------------------------------- */

int ad_checkpoint_items(const ad_param_slot *slots, int n, const float *arena, const char *suffix,
                        ad_st_write_item *items, char **names) {
    size_t total = 0, sl = strlen(suffix);
    for (int i = 0; i < n; i++)
        total += strlen(slots[i].name) + sl + 1;
    char *buf = *names = ad_malloc(total ? total : 1, "tensor names");
    if (!buf) return AD_ERR;
    for (int i = 0; i < n; i++) {
        const int w = sprintf(buf, "%s%s", slots[i].name, suffix);
        items[i] = (ad_st_write_item){
            .name = buf, .dtype = AD_F32, .ndim = slots[i].ndim, .data = arena + slots[i].offset};
        memcpy(items[i].shape, slots[i].shape, sizeof items[i].shape);
        buf += w + 1;
    }
    return AD_OK;
}

int ad_checkpoint_read_arena(const char *dir, const char *file, const ad_param_slot *slots, int n,
                             const char *suffix, float *arena) {
    char *path = ad_path_join(dir, file);
    ad_safetensors st;
    int rc = path ? ad_safetensors_open(&st, path) : AD_ERR;
    free(path);
    if (rc < 0) return ad_fail_context("checkpoint %s", dir);
    for (int i = 0; i < n && rc == AD_OK; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", slots[i].name, suffix);
        rc = ad_safetensors_read_f32(&st, name, slots[i].ndim, slots[i].shape,
                                     arena + slots[i].offset);
    }
    ad_safetensors_close(&st);
    return rc < 0 ? ad_fail_context("checkpoint %s, %s", dir, file) : AD_OK;
}

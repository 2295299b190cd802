#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"

static const char *FILES[] = {"model.safetensors", "optimizer.safetensors", "config.json"};
#define N_FILES 3

static void fault_point(const char *name) {
    const char *at = getenv("AUDISTILL_FAULT_AT");
    if (at && strcmp(at, name) == 0) raise(SIGKILL);
}

static int remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0 ? AD_OK : AD_ERR;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = ad_path_join(path, e->d_name);
        if (p) remove_tree(p);
        free(p);
    }
    closedir(d);
    return rmdir(path) == 0 ? AD_OK : AD_ERR;
}

static int write_text(const char *dir, const char *name, const char *text) {
    char *p = ad_path_join(dir, name);
    int rc = p ? ad_write_file_atomic(p, text, strlen(text)) : AD_ERR;
    free(p);
    return rc;
}

/* Removes step directories beyond the newest `keep` and stale temporaries of dead writers. */
static void prune(const char *ck_dir, int keep) {
    DIR *d = opendir(ck_dir);
    if (!d) return;
    int64_t steps[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char rest[8];
        if (sscanf(e->d_name, "step_%lld%7s", &s, rest) == 1 && n < 4096)
            steps[n++] = s;
        else if (strstr(e->d_name, ".tmp.")) {
            long pid = atol(strrchr(e->d_name, '.') + 1);
            if (pid > 0 && kill((pid_t)pid, 0) != 0) { /* its writer is gone */
                char *p = ad_path_join(ck_dir, e->d_name);
                if (p) remove_tree(p);
                free(p);
            }
        }
    }
    closedir(d);
    for (int i = 0; i < n; i++) { /* newest first */
        for (int j = i + 1; j < n; j++)
            if (steps[j] > steps[i]) {
                int64_t t = steps[i];
                steps[i] = steps[j], steps[j] = t;
            }
        if (i >= keep && keep > 0) {
            char p[4200];
            snprintf(p, sizeof p, "%s/step_%08lld", ck_dir, (long long)steps[i]);
            remove_tree(p);
        }
    }
}

int ad_checkpoint_save(const char *run_dir, int64_t step, const ad_st_write_item *model,
                       int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                       const char *config_json, const char *state_json, int keep) {
    char ck_dir[4096], tmp[4200], final[4200], path[4300];
    snprintf(ck_dir, sizeof ck_dir, "%s/checkpoints", run_dir);
    AD_TRY(ad_mkdir_p(ck_dir));
    snprintf(final, sizeof final, "%s/step_%08lld", ck_dir, (long long)step);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", final, (long long)getpid() > 0 ? (long)getpid() : 0L);
    remove_tree(tmp);
    if (ad_path_exists(final)) remove_tree(final); /* a rewrite of the same step replaces it */
    AD_TRY(ad_mkdir_p(tmp));
    int rc = AD_ERR;
    cJSON *state = cJSON_Parse(state_json);
    if (!cJSON_IsObject(state)) {
        ad_fail("internal: checkpoint state is not a JSON object");
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    ad_st_metadata meta[] = {{"format", "pt"}};
    if (ad_safetensors_write(path, model, n_model, meta, 1) < 0) goto done;
    fault_point("after_model");
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    if (ad_safetensors_write(path, optimizer, n_optimizer, NULL, 0) < 0) goto done;
    fault_point("after_optimizer");
    if (write_text(tmp, "config.json", config_json) < 0) goto done;
    cJSON_DeleteItemFromObject(state, "format_version");
    cJSON_DeleteItemFromObject(state, "step");
    cJSON_DeleteItemFromObject(state, "files");
    cJSON_AddNumberToObject(state, "format_version", AD_CHECKPOINT_FORMAT);
    cJSON_AddNumberToObject(state, "step", (double)step);
    cJSON *files = cJSON_AddObjectToObject(state, "files");
    for (int i = 0; i < N_FILES; i++) {
        uint32_t crc;
        uint64_t size;
        snprintf(path, sizeof path, "%s/%s", tmp, FILES[i]);
        if (ad_file_crc32(path, &crc, &size) < 0) goto done;
        cJSON *f = cJSON_AddObjectToObject(files, FILES[i]);
        cJSON_AddNumberToObject(f, "bytes", (double)size);
        cJSON_AddNumberToObject(f, "crc32", crc);
    }
    char *text = cJSON_Print(state);
    int w =
        text ? write_text(tmp, "state.json", text) : ad_fail("out of memory writing state.json");
    free(text);
    if (w < 0) goto done;
    fault_point("after_state");
    if (ad_fsync_directory(tmp) < 0) goto done;
    fault_point("before_rename");
    if (rename(tmp, final) != 0) {
        ad_fail("cannot rename %s to %s", tmp, final);
        goto done;
    }
    if (ad_fsync_directory(ck_dir) < 0) goto done;
    fault_point("after_rename");
    char name[64];
    snprintf(name, sizeof name, "step_%08lld\n", (long long)step);
    if (write_text(ck_dir, "latest", name) < 0) goto done;
    fault_point("after_latest");
    prune(ck_dir, keep);
    rc = AD_OK;
done:
    cJSON_Delete(state);
    if (rc < 0) remove_tree(tmp);
    return rc;
}

int ad_checkpoint_verify(const char *dir) {
    char path[4300];
    snprintf(path, sizeof path, "%s/state.json", dir);
    char *text;
    size_t len;
    if (ad_read_file(path, 64u << 20, &text, &len) < 0)
        return ad_fail_context("checkpoint %s is incomplete", dir);
    cJSON *state = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = AD_ERR;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(state, "format_version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(state, "files");
    if (!state || !cJSON_IsNumber(version) || !cJSON_IsObject(files)) {
        ad_fail("checkpoint %s: state.json is damaged (not the JSON a checkpoint writes)", dir);
        goto done;
    }
    if (version->valuedouble != AD_CHECKPOINT_FORMAT) {
        ad_fail("checkpoint %s: format version %g, this build reads %d", dir, version->valuedouble,
                AD_CHECKPOINT_FORMAT);
        goto done;
    }
    for (int i = 0; i < N_FILES; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(files, FILES[i]);
        const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(f, "bytes"),
                    *crc = cJSON_GetObjectItemCaseSensitive(f, "crc32");
        if (!cJSON_IsNumber(bytes) || !cJSON_IsNumber(crc)) {
            ad_fail("checkpoint %s: state.json does not record %s", dir, FILES[i]);
            goto done;
        }
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        uint32_t got;
        uint64_t size;
        if (ad_file_crc32(path, &got, &size) < 0) {
            ad_fail_context("checkpoint %s is incomplete", dir);
            goto done;
        }
        if ((double)size != bytes->valuedouble) {
            ad_fail("checkpoint %s: %s is %llu bytes, state.json says %.0f (truncated?)", dir,
                    FILES[i], (unsigned long long)size, bytes->valuedouble);
            goto done;
        }
        if ((double)got != crc->valuedouble) {
            ad_fail("checkpoint %s: %s fails its CRC-32 check (corrupt)", dir, FILES[i]);
            goto done;
        }
    }
    rc = AD_OK;
done:
    cJSON_Delete(state);
    return rc;
}

int ad_checkpoint_state(const char *dir, char **state_json) {
    char path[4300];
    size_t len;
    snprintf(path, sizeof path, "%s/state.json", dir);
    return ad_read_file(path, 64u << 20, state_json, &len);
}

int ad_checkpoint_find(const char *where, char **out) {
    *out = NULL;
    char path[4300];
    snprintf(path, sizeof path, "%s/state.json", where);
    if (ad_path_exists(path)) {
        AD_TRY(ad_checkpoint_verify(where));
        *out = ad_strdup(where, "path");
        return *out ? AD_OK : AD_ERR;
    }
    char ck_dir[4200];
    snprintf(ck_dir, sizeof ck_dir, "%s/checkpoints", where);
    if (!ad_is_directory(ck_dir)) return AD_OK; /* a fresh run */
    snprintf(path, sizeof path, "%s/latest", ck_dir);
    char *latest = NULL;
    size_t len;
    if (ad_path_exists(path) && ad_read_file(path, 4096, &latest, &len) == AD_OK) {
        latest[strcspn(latest, "\r\n")] = '\0';
        char *dir = ad_path_join(ck_dir, latest);
        free(latest);
        if (dir && ad_checkpoint_verify(dir) == AD_OK) {
            *out = dir;
            return AD_OK;
        }
        free(dir);
    }
    /* `latest` missing or broken: the newest step directory that verifies. */
    DIR *d = opendir(ck_dir);
    if (!d) return ad_fail("cannot list %s", ck_dir);
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char rest[8];
        if (sscanf(e->d_name, "step_%lld%7s", &s, rest) != 1 || s <= best) continue;
        char *dir = ad_path_join(ck_dir, e->d_name);
        if (dir && ad_checkpoint_verify(dir) == AD_OK) best = s;
        free(dir);
    }
    closedir(d);
    if (best < 0) return ad_fail("%s holds no complete checkpoint", ck_dir);
    char name[64];
    snprintf(name, sizeof name, "step_%08lld", best);
    *out = ad_path_join(ck_dir, name);
    return *out ? AD_OK : AD_ERR;
}

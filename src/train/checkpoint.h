/* Training checkpoints: one directory per checkpoint, RUN/checkpoints/step_NNNNNNNN/, holding
 *   model.safetensors      the model's tensors under their Hugging Face names
 *   optimizer.safetensors  Adam's moments, "<name>.exp_avg" and "<name>.exp_avg_sq"
 *   config.json            the model config (text given by the caller)
 *   state.json             format version, step, RNG states (seed, stream, position), the data
 *                          cursor, the job config flattened to key/values and its hash, the
 *                          size and CRC-32 of every file above, and a CRC-32 of itself
 * plus RUN/checkpoints/latest, one line naming the newest checkpoint directory.
 *
 * Crash safety. A checkpoint is written into step_N.tmp.<pid>/, every file fsynced, the
 * directory fsynced, renamed to step_N, the parent fsynced; `latest` is replaced atomically
 * LAST; only then are checkpoints beyond the newest `keep` removed (each renamed to
 * step_M.del.<pid> first, so a half-deleted directory never carries a step name). Killed at any
 * moment, a run directory holds its previous complete checkpoint, and maybe the new complete
 * one; leftovers (*.tmp.<pid>, *.old.<pid>, *.del.<pid> of dead processes) are ignored by
 * readers and removed by the next successful save.
 *
 * Loading verifies before anything is used: state.json parses, its own CRC matches, the format
 * version is known, the directory's step matches, and every file exists with its recorded size
 * and CRC-32. A partial or corrupt checkpoint is refused with a message naming the checkpoint
 * and the file; it is never loaded. Only one process (rank 0) may write a run directory.
 *
 * Fault injection for tests: AUDISTILL_FAULT_AT=<point>[:<count>] raises SIGKILL the
 * <count>-th time (default 1) this process reaches the named point of a save; the points, in
 * the order a save passes them, are AD_CKPT_FAULT_POINTS. */
#ifndef AUDISTILL_TRAIN_CHECKPOINT_H
#define AUDISTILL_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "train/optim.h"

#define AD_CHECKPOINT_FORMAT 2
#define AD_CKPT_MAX_RNG      8

/* NULL-terminated, in the order a save reaches them: begin (temporary directory made),
 * after_model, after_optimizer, after_config, after_state, before_rename (all fsynced),
 * after_rename, after_latest, during_prune (an old checkpoint renamed aside, not yet deleted),
 * end. */
extern const char *const AD_CKPT_FAULT_POINTS[];

typedef struct {
    const char *key, *value;
} ad_kv;

typedef struct {
    char name[32]; /* what the stream feeds: "data", "dropout", ... */
    ad_rng rng;
} ad_ckpt_rng;

typedef struct {
    int64_t epoch, index; /* the next example is number `index` of epoch `epoch`'s order */
    uint64_t shuffle_seed;
} ad_data_cursor;

typedef struct {
    int64_t step; /* optimizer steps done */
    int n_rng;
    ad_ckpt_rng rng[AD_CKPT_MAX_RNG];
    bool has_cursor; /* loading: state.json held a data cursor (always written) */
    ad_data_cursor cursor;
    /* The job config flattened to key/values ("train.lr" -> "3e-4"). Writing: the caller's
     * strings, config_hash computed by the writer. Loading: owned by the state. */
    int n_config;
    ad_kv *config;
    uint64_t config_hash;
} ad_ckpt_state;

/* FNV-1a 64 over "key=value\n" of every key not in `ignore` (NULL-terminated, may be NULL),
 * keys in strcmp order, so the order of the job file does not matter. */
uint64_t ad_config_hash(const ad_kv *kv, int n, const char *const *ignore);

/* Keys (not in `ignore`) whose values differ or that only one side has, into buf as
 * "key (checkpoint: a, job: b); ..." ("absent" for a missing side). Returns their number. */
int ad_config_diff(const ad_kv *ckpt, int n_ckpt, const ad_kv *job, int n_job,
                   const char *const *ignore, char *buf, size_t size);

/* The resume check: fails, naming the checkpoint and every differing key, when the job config
 * differs from the one the checkpoint was made with (keys in `ignore` may change freely);
 * with `force` it only warns. */
int ad_checkpoint_check_config(const char *ckpt_dir, const ad_ckpt_state *st, const ad_kv *job,
                               int n_job, const char *const *ignore, bool force);

/* Writes checkpoint st->step of a run (see the top of this file); keep > 0 keeps that many
 * checkpoints (the new one included), keep <= 0 all. *out_dir (may be NULL) receives the new
 * directory (caller frees). */
int ad_checkpoint_write(const char *run_dir, const ad_ckpt_state *st, const ad_st_write_item *model,
                        int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                        const char *config_json, int keep, char **out_dir);

/* The same with a caller-made state: state_json is a JSON object to which "format_version",
 * "step", "files" and "state_crc32" are added. */
int ad_checkpoint_save(const char *run_dir, int64_t step, const ad_st_write_item *model,
                       int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                       const char *config_json, const char *state_json, int keep);

/* Checks a checkpoint directory as described at the top; AD_OK only for a complete one. */
int ad_checkpoint_verify(const char *ckpt_dir);

/* `--resume` semantics. `where` is a checkpoint directory (verified, refused if broken), or a
 * run directory (or its checkpoints/ directory): then the checkpoint `latest` names if it
 * verifies, else (with a warning saying why) the newest step directory that does.
 * *ckpt_dir is allocated; AD_OK with *ckpt_dir NULL when the run has no checkpoint yet; an
 * error when checkpoints exist but none is complete. */
int ad_checkpoint_find(const char *where, char **ckpt_dir);

/* Verifies ckpt_dir and reads its state.json into *st (free with ad_ckpt_state_free). */
int ad_checkpoint_load(const char *ckpt_dir, ad_ckpt_state *st);
void ad_ckpt_state_free(ad_ckpt_state *st);

/* state.json of a checkpoint, as text (caller frees); verify first. */
int ad_checkpoint_state(const char *ckpt_dir, char **state_json);

/* Write items for the tensors of a flat arena: item i is slots[i] with the name
 * slots[i].name + suffix ("" for the model, ".exp_avg" / ".exp_avg_sq" for the optimizer), f32,
 * the slot's shape. The names live in *names (one allocation, caller frees). */
int ad_checkpoint_items(const ad_param_slot *slots, int n, const float *arena, const char *suffix,
                        ad_st_write_item *items, char **names);

/* Reads the tensors "<slots[i].name><suffix>" of a verified checkpoint's `file`
 * ("model.safetensors" or "optimizer.safetensors") into arena + slots[i].offset, converting
 * from any float dtype; every tensor must exist with the slot's shape. */
int ad_checkpoint_read_arena(const char *ckpt_dir, const char *file, const ad_param_slot *slots,
                             int n, const char *suffix, float *arena);

#endif

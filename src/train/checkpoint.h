/* Checkpoints: RUN/checkpoints/step_NNNNNNNN/ holding model.safetensors (HF tensor names),
 * optimizer.safetensors (Adam moments), config.json and state.json (step, data cursor, job
 * config and its hash, and the size and CRC-32 of every file). Written into a temporary
 * directory, every file fsynced, renamed into place, the parent fsynced; RUN/checkpoints/latest
 * names the newest one and is updated last; older ones beyond `keep` are removed afterwards.
 * Loading verifies sizes and checksums, so a corrupt or partial checkpoint is refused, never
 * loaded. AUDISTILL_FAULT_AT=<point> kills the process (SIGKILL) at a named point of the write
 * (after_model, after_optimizer, after_state, before_rename, after_rename, after_latest) so tests
 * can prove crash safety. */
#ifndef AUDISTILL_TRAIN_CHECKPOINT_H
#define AUDISTILL_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "io/safetensors.h"

#define AD_CHECKPOINT_FORMAT 1

/* Writes checkpoint `step`; state_json is a JSON object the caller fills (cursor, config...),
 * to which "format_version", "step" and "files" are added. */
int ad_checkpoint_save(const char *run_dir, int64_t step, const ad_st_write_item *model,
                       int n_model, const ad_st_write_item *optimizer, int n_optimizer,
                       const char *config_json, const char *state_json, int keep);

/* Checks a checkpoint directory: state.json parses, format known, every file present with its
 * recorded size and CRC-32. */
int ad_checkpoint_verify(const char *ckpt_dir);

/* `where` is a checkpoint directory (verified) or a run directory: then the one `latest` names
 * if it verifies, else the newest step directory that does. *ckpt_dir is allocated; returns
 * AD_OK with *ckpt_dir NULL when the run has no checkpoint yet. */
int ad_checkpoint_find(const char *where, char **ckpt_dir);

/* state.json of a verified checkpoint, as text (caller frees). */
int ad_checkpoint_state(const char *ckpt_dir, char **state_json);

#endif

/* Speech for the synthetic set: espeak-ng as a child process, resampling through the audio file
 * API, and additive noise. */
#define _GNU_SOURCE
#include "data/synth_audio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "io/audio_file.h"
#include "io/file.h"

extern char **environ;

static const char *const base_voices[] = {"en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland"};
static const char *const variants[] = {"",    "+m1", "+m2", "+m3", "+m4", "+m5",
                                       "+m6", "+m7", "+f1", "+f2", "+f3", "+f4"};

void ad_synth_pick_voice(ad_rng *rng, ad_synth_voice *v) {
    int nb = (int)(sizeof base_voices / sizeof base_voices[0]);
    int nv = (int)(sizeof variants / sizeof variants[0]);
    const char *base = base_voices[ad_rng_below(rng, (uint32_t)nb)];
    const char *variant = variants[ad_rng_below(rng, (uint32_t)nv)];
    snprintf(v->voice, sizeof v->voice, "%s%s", base, variant);
    v->rate = 140 + (int)ad_rng_below(rng, 51);
    v->pitch = 30 + (int)ad_rng_below(rng, 41);
    v->snr_db = 25.0f + 10.0f * ad_rng_uniform(rng);
    v->pink = ad_rng_below(rng, 2) == 1;
}

/* The first line of espeak-ng's stderr, for the error message. */
static void first_line(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(buf, (int)size, f)) buf[strcspn(buf, "\r\n")] = '\0';
    fclose(f);
}

int ad_synth_speak(const char *espeak, const char *text, const ad_synth_voice *v,
                   const char *tmp_wav, float **samples, int64_t *n) {
    *samples = NULL;
    *n = 0;
    char rate[16], pitch[16], err_path[4096];
    snprintf(rate, sizeof rate, "%d", v->rate);
    snprintf(pitch, sizeof pitch, "%d", v->pitch);
    snprintf(err_path, sizeof err_path, "%s.stderr", tmp_wav);
    /* "--" ends the options, so a sentence can never be read as one. */
    char *argv[] = {(char *)espeak, "-v", (char *)v->voice, "-s", rate,         "-p",
                    pitch,          "-w", (char *)tmp_wav,  "--", (char *)text, NULL};
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return ad_fail("cannot set up a child process");
    int rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path,
                                              O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    if (rc == 0) rc = posix_spawnp(&pid, espeak, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        unlink(err_path);
        return ad_fail("cannot start %s: %s (install espeak-ng or pass --espeak PATH)", espeak,
                       strerror(rc));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            unlink(err_path);
            return ad_fail("waiting for %s: %s", espeak, strerror(errno));
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char msg[256];
        first_line(err_path, msg, sizeof msg);
        unlink(err_path);
        unlink(tmp_wav);
        if (WIFSIGNALED(status))
            return ad_fail("%s -v %s was killed by signal %d on \"%s\"", espeak, v->voice,
                           WTERMSIG(status), text);
        return ad_fail("%s -v %s exited with status %d on \"%s\"%s%s", espeak, v->voice,
                       WEXITSTATUS(status), text, msg[0] ? ": " : "", msg);
    }
    unlink(err_path);
    if (ad_audio_read(tmp_wav, 0.0, 0.0, AD_SYNTH_SAMPLE_RATE, samples, n) < 0) {
        unlink(tmp_wav);
        return ad_fail_context("reading what %s wrote for \"%s\"", espeak, text);
    }
    unlink(tmp_wav);
    return AD_OK;
}

/* Paul Kellet's pink filter: white noise through six leaky integrators gives 1/f within
 * 0.05 dB above 9 Hz; cheap and needs no FFT. */
typedef struct {
    double b[7];
} pink_state;

static double pink_next(pink_state *s, double white) {
    double *b = s->b;
    b[0] = 0.99886 * b[0] + white * 0.0555179;
    b[1] = 0.99332 * b[1] + white * 0.0750759;
    b[2] = 0.96900 * b[2] + white * 0.1538520;
    b[3] = 0.86650 * b[3] + white * 0.3104856;
    b[4] = 0.55000 * b[4] + white * 0.5329522;
    b[5] = -0.7616 * b[5] - white * 0.0168980;
    double out = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + white * 0.5362;
    b[6] = white * 0.115926;
    return out;
}

/* Noise of unit RMS over the n samples written into `out`. */
static void make_noise(ad_rng *rng, float *out, int64_t n, bool pink) {
    pink_state ps;
    memset(&ps, 0, sizeof ps);
    /* Let the slow integrators settle so the start is not quieter than the rest. */
    if (pink)
        for (int i = 0; i < 4096; i++)
            pink_next(&ps, ad_rng_normal(rng));
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double w = ad_rng_normal(rng);
        double v = pink ? pink_next(&ps, w) : w;
        out[i] = (float)v;
        sum += v * v;
    }
    double scale = n > 0 && sum > 0 ? 1.0 / sqrt(sum / (double)n) : 0.0;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(out[i] * scale);
}

int ad_synth_noise(ad_rng *rng, float *x, int64_t n, float rms, bool pink) {
    float *noise = ad_malloc((size_t)(n > 0 ? n : 1) * sizeof *noise, "noise");
    if (!noise) return AD_ERR;
    make_noise(rng, noise, n, pink);
    for (int64_t i = 0; i < n; i++)
        x[i] += rms * noise[i];
    free(noise);
    return AD_OK;
}

#define LEVEL_FRAME 160 /* 10 ms at 16 kHz */

/* Active speech power: mean power of the 10 ms frames within 40 dB of the loudest, so the
 * silence espeak-ng leaves at the end does not lower the speech level. */
static double active_power(const float *x, int64_t n) {
    int64_t frames = n / LEVEL_FRAME;
    if (frames == 0) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++)
            s += (double)x[i] * x[i];
        return n ? s / (double)n : 0.0;
    }
    double max_power = 0.0;
    for (int64_t f = 0; f < frames; f++) {
        double s = 0.0;
        for (int i = 0; i < LEVEL_FRAME; i++)
            s += (double)x[f * LEVEL_FRAME + i] * x[f * LEVEL_FRAME + i];
        if (s > max_power) max_power = s;
    }
    double total = 0.0;
    int64_t active = 0;
    for (int64_t f = 0; f < frames; f++) {
        double s = 0.0;
        for (int i = 0; i < LEVEL_FRAME; i++)
            s += (double)x[f * LEVEL_FRAME + i] * x[f * LEVEL_FRAME + i];
        if (s >= max_power * 1e-4) {
            total += s;
            active++;
        }
    }
    return active ? total / ((double)active * LEVEL_FRAME) : 0.0;
}

int ad_synth_add_noise(ad_rng *rng, float *x, int64_t n, float snr_db, bool pink,
                       float *noise_rms) {
    double power = active_power(x, n);
    float rms = (float)sqrt(power / pow(10.0, snr_db / 10.0));
    AD_TRY(ad_synth_noise(rng, x, n, rms, pink));
    float peak = 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > peak) peak = fabsf(x[i]);
    if (peak > 0.99f) {
        float scale = 0.99f / peak;
        for (int64_t i = 0; i < n; i++)
            x[i] *= scale;
        rms *= scale;
    }
    *noise_rms = rms;
    return AD_OK;
}

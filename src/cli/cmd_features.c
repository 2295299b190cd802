/* audistill features: the Whisper log-mel matrix of one audio file (any rate or channel
 * count; decoded, down-mixed and resampled to 16 kHz), written as a float32 .npy file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/mel.h"
#include "cli/cli.h"
#include "core/error.h"
#include "io/audio_file.h"
#include "io/npy.h"

static const char *usage = "audistill features AUDIO -o FILE.npy [--valid-only] [--offset S] "
                           "[--duration S] [--mel-bins N]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Writes the log-mel features of AUDIO (WAV, FLAC, OGG...; any sample rate and\n"
           "channel count) as a float32 .npy matrix of shape (mel bins, frames), computed as\n"
           "transformers' WhisperFeatureExtractor does: 16 kHz mono, padded or cut to 30 s,\n"
           "n_fft 400, hop 160, Slaney mel filters, log10, floor at max - 8, (x + 4) / 4.\n\n"
           "  -o FILE.npy      output file (written atomically)\n"
           "  --valid-only     keep only the frames that carry audio, ceil(samples / 160),\n"
           "                   instead of all 3000\n"
           "  --offset S       start S seconds into the file (default 0)\n"
           "  --duration S     read at most S seconds (default: to the end; features cover\n"
           "                   the first 30 s of what is read)\n"
           "  --mel-bins N     mel filters (default 128, as Qwen2-Audio; Whisper v1/v2 used 80)\n",
           usage);
}

static int parse_double(const char *text, double *out) {
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    return errno == 0 && end != text && *end == '\0' ? 0 : -1;
}

int cmd_features(int argc, char **argv) {
    const char *input = NULL, *output = NULL;
    double offset = 0.0, duration = 0.0, mel_bins = 128;
    int valid_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            print_help();
            return 0;
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            output = argv[++i];
        } else if (strcmp(a, "--valid-only") == 0) {
            valid_only = 1;
        } else if (strcmp(a, "--offset") == 0 && i + 1 < argc) {
            if (parse_double(argv[++i], &offset) < 0 || offset < 0)
                return cli_usage_error("features", usage, "--offset needs seconds >= 0, got '%s'",
                                       argv[i]);
        } else if (strcmp(a, "--duration") == 0 && i + 1 < argc) {
            if (parse_double(argv[++i], &duration) < 0 || duration <= 0)
                return cli_usage_error("features", usage, "--duration needs seconds > 0, got '%s'",
                                       argv[i]);
        } else if (strcmp(a, "--mel-bins") == 0 && i + 1 < argc) {
            if (parse_double(argv[++i], &mel_bins) < 0 || mel_bins < 1 || mel_bins > 1024 ||
                mel_bins != (int)mel_bins)
                return cli_usage_error("features", usage,
                                       "--mel-bins needs an integer in 1..1024, got '%s'", argv[i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage_error("features", usage, "unexpected argument '%s'", a);
        } else if (!input) {
            input = a;
        } else {
            return cli_usage_error("features", usage, "more than one input file ('%s')", a);
        }
    }
    if (!input) return cli_usage_error("features", usage, "an AUDIO file is required");
    if (!output) return cli_usage_error("features", usage, "-o FILE.npy is required");

    float *samples = NULL, *features = NULL, *kept = NULL;
    int64_t n = 0;
    ad_mel mel;
    int have_mel = 0, rc = 1;
    if (ad_audio_read(input, offset, duration, AD_MEL_SAMPLE_RATE, &samples, &n) < 0) goto done;
    if (ad_mel_init(&mel, (int)mel_bins) < 0) goto done;
    have_mel = 1;
    const size_t bins = (size_t)mel.n_mels;
    features = ad_malloc(sizeof *features * bins * AD_MEL_FRAMES, "features");
    if (!features || ad_mel_compute(&mel, samples, n, features) < 0) goto done;
    const int64_t valid = ad_mel_valid_frames(n);
    int64_t frames = AD_MEL_FRAMES;
    const float *data = features;
    if (valid_only) {
        frames = valid;
        kept = ad_malloc(sizeof *kept * bins * (size_t)valid + 1, "features");
        if (!kept) goto done;
        for (size_t m = 0; m < bins; m++)
            memcpy(kept + m * (size_t)valid, features + m * AD_MEL_FRAMES,
                   sizeof *kept * (size_t)valid);
        data = kept;
    }
    const int64_t shape[2] = {(int64_t)bins, frames};
    if (ad_npy_write(output, AD_NPY_F4, shape, 2, data) < 0) goto done;
    printf("%s: %lld samples at %d Hz (%.2f s%s), %lld of %d frames valid -> %s (%lld x %lld "
           "float32)\n",
           input, (long long)n, AD_MEL_SAMPLE_RATE, (double)n / AD_MEL_SAMPLE_RATE,
           n > AD_MEL_CHUNK_SAMPLES ? ", features cover the first 30 s" : "", (long long)valid,
           AD_MEL_FRAMES, output, (long long)shape[0], (long long)shape[1]);
    rc = 0;
done:
    if (rc) cli_fail("features");
    if (have_mel) ad_mel_free(&mel);
    free(samples);
    free(features);
    free(kept);
    return rc;
}

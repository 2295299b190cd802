/* audistill segment: splits a long recording into segments no longer than a maximum (energy
 * VAD) and writes them as a segmentation YAML list. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "data/segment.h"
#include "io/audio_file.h"
#include "io/file.h"

#define SEGMENT_RATE 16000

static const char *usage = "audistill segment AUDIO [--max-seconds 20] [--min-silence 0.3] "
                           "[--pad 0.1] [--min-speech 0.15] -o SEGMENTS.yaml";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Splits a long recording (a talk) into segments with an energy-based voice activity\n"
           "detector: 10 ms frame energies against an adaptive noise floor (running minimum\n"
           "over +-5 s), pauses shorter than --min-silence bridged, bursts shorter than\n"
           "--min-speech dropped, --pad seconds kept around speech, and speech longer than\n"
           "--max-seconds cut at its quietest point. Writes one YAML entry per segment:\n"
           "  - {duration: D, offset: O, speaker_id: <file name without extension>, wav: "
           "<file name>}\n"
           "Any format libsndfile reads; audio is analysed at 16 kHz mono.\n",
           usage);
}

static int parse_seconds(const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= 0.0) || v > 1e6) return -1;
    *out = v;
    return 0;
}

int cmd_segment(int argc, char **argv) {
    const char *audio = NULL, *out = NULL;
    ad_vad_options opt;
    ad_vad_defaults(&opt);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            print_help();
            return 0;
        }
        double *target = strcmp(a, "--max-seconds") == 0   ? &opt.max_seconds
                         : strcmp(a, "--min-silence") == 0 ? &opt.min_silence
                         : strcmp(a, "--pad") == 0         ? &opt.pad
                         : strcmp(a, "--min-speech") == 0  ? &opt.min_speech
                                                           : NULL;
        if (target) {
            if (i + 1 >= argc || parse_seconds(argv[i + 1], target) < 0)
                return cli_usage_error("segment", usage, "%s wants a number of seconds", a);
            i++;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (i + 1 >= argc) return cli_usage_error("segment", usage, "%s wants a path", a);
            out = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("segment", usage, "unknown option '%s'", a);
        } else if (!audio) {
            audio = a;
        } else {
            return cli_usage_error("segment", usage, "unexpected argument '%s'", a);
        }
    }
    if (!audio) return cli_usage_error("segment", usage, "an AUDIO file is required");
    if (!out) return cli_usage_error("segment", usage, "-o SEGMENTS.yaml is required");
    if (opt.max_seconds < 0.5)
        return cli_usage_error("segment", usage, "--max-seconds must be at least 0.5");

    float *x = NULL;
    int64_t n = 0;
    if (ad_audio_read(audio, 0.0, 0.0, SEGMENT_RATE, &x, &n) < 0) return cli_fail("segment");
    ad_vad_segment *segs = NULL;
    int count = 0;
    int rc = ad_vad_segment_audio(x, n, SEGMENT_RATE, &opt, &segs, &count);
    free(x);
    if (rc < 0) return cli_fail("segment");

    const char *base = strrchr(audio, '/');
    base = base ? base + 1 : audio;
    char speaker[256];
    snprintf(speaker, sizeof speaker, "%s", base);
    char *dot = strrchr(speaker, '.');
    if (dot && dot != speaker) *dot = '\0';
    size_t cap = (size_t)count * (strlen(speaker) + strlen(base) + 128) + 1, len = 0;
    char *yaml = ad_malloc(cap, "segmentation YAML");
    if (!yaml) {
        free(segs);
        return cli_fail("segment");
    }
    yaml[0] = '\0';
    double speech = 0.0, longest = 0.0;
    for (int i = 0; i < count; i++) {
        len +=
            (size_t)ad_segmentation_entry(yaml + len, cap - len, segs[i].start,
                                          segs[i].end - segs[i].start, SEGMENT_RATE, speaker, base);
        double d = (double)(segs[i].end - segs[i].start) / SEGMENT_RATE;
        speech += d;
        if (d > longest) longest = d;
    }
    rc = ad_write_file_atomic(out, yaml, len);
    free(yaml);
    free(segs);
    if (rc < 0) return cli_fail("segment");
    printf("%s: %d segments, %.1f s of %.1f s, longest %.2f s -> %s\n", audio, count, speech,
           (double)n / SEGMENT_RATE, longest, out);
    return 0;
}

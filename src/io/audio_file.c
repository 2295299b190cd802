/* Audio decoding through libsndfile and resampling through libsoxr (see audio_file.h).
 *
 * A range read decodes [start - margin, end + margin] of the file and resamples that chunk.
 * The chunk starts on an input frame where the input and output sample grids meet (a multiple
 * of in_rate / gcd(in_rate, out_rate)), so its output samples fall on exactly the instants of
 * a whole-file read, and the margin covers the resampling filter's support, so samples near
 * the range's edges see the same neighbours as in a whole-file read. */
#include "io/audio_file.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/file.h"

/* Frames decoded per libsndfile call; bounds memory whatever the file's length. */
#define DECODE_BLOCK_FRAMES 16384
/* Input context on each side of a range: soxr's HQ filter spans a few milliseconds at
 * common rates; 50 ms leaves a wide safety factor (the range test checks the result). */
#define RESAMPLE_MARGIN_S 0.05
/* Refuse absurd rates early: they come from a header or a user and feed size arithmetic. */
#define MAX_SAMPLE_RATE 1000000

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Output length of a whole-file read: frames * out / in, rounded to nearest. */
static int64_t output_length(int64_t frames, int in_rate, int out_rate) {
    if (in_rate == out_rate) return frames;
    return (frames * out_rate + in_rate / 2) / in_rate;
}

static int open_audio(const char *path, SNDFILE **sf, SF_INFO *info) {
    struct stat st;
    if (stat(path, &st) != 0)
        return ad_fail("cannot open audio file %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return ad_fail("%s is a directory, expected an audio file", path);
    if (st.st_size == 0) return ad_fail("%s is empty (0 bytes), expected an audio file", path);
    memset(info, 0, sizeof *info);
    *sf = sf_open(path, SFM_READ, info);
    if (!*sf)
        return ad_fail("%s is not a readable audio file (WAV, FLAC, OGG...): %s", path,
                       sf_strerror(NULL));
    if (info->channels < 1 || info->samplerate < 1 || info->samplerate > MAX_SAMPLE_RATE) {
        sf_close(*sf);
        return ad_fail("%s: unsupported header (%d channels at %d Hz)", path, info->channels,
                       info->samplerate);
    }
    if (info->frames <= 0) {
        sf_close(*sf);
        return ad_fail("%s holds no audio samples", path);
    }
    return AD_OK;
}

int ad_audio_probe(const char *path, ad_audio_info *out) {
    SNDFILE *sf;
    SF_INFO info;
    AD_TRY(open_audio(path, &sf, &info));
    memset(out, 0, sizeof *out);
    out->sample_rate = info.samplerate;
    out->channels = info.channels;
    out->frames = info.frames;
    SF_FORMAT_INFO fi = {.format = info.format & SF_FORMAT_TYPEMASK};
    if (sf_command(NULL, SFC_GET_FORMAT_INFO, &fi, sizeof fi) == 0 && fi.name)
        snprintf(out->format, sizeof out->format, "%s", fi.name);
    sf_close(sf);
    return AD_OK;
}

/* Decodes frames [from, to) as mono (mean of channels) and hands them on in blocks. */
typedef int (*mono_sink)(void *ctx, const float *mono, size_t n);

static int decode_mono(const char *path, SNDFILE *sf, const SF_INFO *info, int64_t from, int64_t to,
                       mono_sink sink, void *ctx) {
    int ch = info->channels;
    float *inter = ad_malloc((size_t)DECODE_BLOCK_FRAMES * (size_t)ch * sizeof *inter, path);
    float *mono = ad_malloc((size_t)DECODE_BLOCK_FRAMES * sizeof *mono, path);
    int rc = AD_OK;
    if (!inter || !mono) {
        rc = AD_ERR;
        goto done;
    }
    if (from > 0) {
        if (info->seekable) {
            if (sf_seek(sf, from, SEEK_SET) != from) {
                rc = ad_fail("%s: cannot seek to frame %lld: %s", path, (long long)from,
                             sf_strerror(sf));
                goto done;
            }
        } else {
            for (int64_t skipped = 0; skipped < from;) {
                sf_count_t want =
                    from - skipped < DECODE_BLOCK_FRAMES ? from - skipped : DECODE_BLOCK_FRAMES;
                sf_count_t got = sf_readf_float(sf, inter, want);
                if (got <= 0) {
                    rc = ad_fail("%s: stream ended after %lld frames while skipping to %lld", path,
                                 (long long)skipped, (long long)from);
                    goto done;
                }
                skipped += got;
            }
        }
    }
    for (int64_t pos = from; pos < to;) {
        sf_count_t want = to - pos < DECODE_BLOCK_FRAMES ? to - pos : DECODE_BLOCK_FRAMES;
        sf_count_t got = sf_readf_float(sf, inter, want);
        if (got <= 0) {
            rc = ad_fail("%s: decoding stopped at frame %lld of %lld (truncated or corrupt "
                         "file?): %s",
                         path, (long long)pos, (long long)info->frames, sf_strerror(sf));
            goto done;
        }
        for (sf_count_t i = 0; i < got; i++) {
            const float *f = inter + (size_t)i * (size_t)ch;
            double sum = 0.0;
            for (int c = 0; c < ch; c++)
                sum += f[c];
            mono[i] = (float)(sum / ch);
        }
        if (sink(ctx, mono, (size_t)got) < 0) {
            rc = AD_ERR;
            goto done;
        }
        pos += got;
    }
done:
    free(inter);
    free(mono);
    return rc;
}

/* Same-rate reads: copy straight into the output. */
typedef struct {
    float *out;
    int64_t n;
} copy_ctx;

static int copy_sink(void *ctx, const float *mono, size_t n) {
    copy_ctx *c = ctx;
    memcpy(c->out + c->n, mono, n * sizeof *mono);
    c->n += (int64_t)n;
    return AD_OK;
}

/* Resampled reads: keep chunk outputs [skip, skip + want) and drop the rest. */
typedef struct {
    const char *path;
    soxr_t soxr;
    float *out;    /* want samples */
    int64_t skip;  /* chunk outputs before the range */
    int64_t want;  /* outputs wanted */
    int64_t seen;  /* chunk outputs produced so far */
    float *buffer; /* soxr output staging */
    size_t buffer_len;
} resample_ctx;

static void keep_outputs(resample_ctx *r, size_t produced) {
    for (size_t i = 0; i < produced; i++) {
        int64_t k = r->seen + (int64_t)i - r->skip;
        if (k >= 0 && k < r->want) r->out[k] = r->buffer[i];
    }
    r->seen += (int64_t)produced;
}

static int resample_sink(void *ctx, const float *mono, size_t n) {
    resample_ctx *r = ctx;
    size_t consumed = 0;
    while (consumed < n) {
        size_t idone = 0, odone = 0;
        soxr_error_t e = soxr_process(r->soxr, mono + consumed, n - consumed, &idone, r->buffer,
                                      r->buffer_len, &odone);
        if (e) return ad_fail("%s: resampling failed: %s", r->path, soxr_strerror(e));
        keep_outputs(r, odone);
        consumed += idone;
        if (idone == 0 && odone == 0) return ad_fail("%s: resampler made no progress", r->path);
    }
    return AD_OK;
}

static int resample_flush(resample_ctx *r) {
    for (;;) {
        size_t odone = 0;
        soxr_error_t e = soxr_process(r->soxr, NULL, 0, NULL, r->buffer, r->buffer_len, &odone);
        if (e) return ad_fail("%s: resampling failed: %s", r->path, soxr_strerror(e));
        if (odone == 0) return AD_OK;
        keep_outputs(r, odone);
    }
}

int ad_audio_read(const char *path, double offset_s, double duration_s, int target_rate,
                  float **samples, int64_t *n) {
    *samples = NULL;
    *n = 0;
    if (target_rate < 1 || target_rate > MAX_SAMPLE_RATE)
        return ad_fail("%s: target sample rate %d Hz is out of range", path, target_rate);
    if (!isfinite(offset_s) || offset_s < 0.0)
        return ad_fail("%s: offset %g s must be a finite number >= 0", path, offset_s);
    if (!isfinite(duration_s)) return ad_fail("%s: duration %g s is not finite", path, duration_s);

    SNDFILE *sf;
    SF_INFO info;
    AD_TRY(open_audio(path, &sf, &info));
    const int in_rate = info.samplerate;
    const int64_t total = output_length(info.frames, in_rate, target_rate);
    const int64_t j0 = llround(offset_s * target_rate);
    if (j0 >= total) {
        sf_close(sf);
        return ad_fail("%s: offset %.3f s is at or past the end of the audio (%.3f s long)", path,
                       offset_s, (double)info.frames / in_rate);
    }
    int64_t j1 = total;
    if (duration_s > 0.0) {
        double end = (double)j0 + duration_s * target_rate;
        if (end < (double)total) j1 = llround(end);
    }
    if (j1 <= j0) {
        sf_close(sf);
        return ad_fail("%s: duration %g s holds no sample at %d Hz", path, duration_s, target_rate);
    }
    const int64_t want = j1 - j0;
    float *out = ad_calloc((size_t)want, sizeof *out, path);
    if (!out) {
        sf_close(sf);
        return AD_ERR;
    }

    int rc;
    if (in_rate == target_rate) {
        copy_ctx c = {.out = out, .n = 0};
        rc = decode_mono(path, sf, &info, j0, j1, copy_sink, &c);
    } else {
        const int64_t g = gcd64(in_rate, target_rate);
        const int64_t in_step = in_rate / g, out_step = target_rate / g;
        const int64_t margin = (int64_t)ceil(RESAMPLE_MARGIN_S * in_rate);
        /* Input frames around the range, the start on a shared grid point. */
        int64_t s0 = (j0 * in_rate) / target_rate - margin;
        s0 = s0 <= 0 ? 0 : (s0 / in_step) * in_step;
        int64_t s1 = (j1 * in_rate + target_rate - 1) / target_rate + margin;
        if (s1 > info.frames) s1 = info.frames;

        soxr_error_t e = NULL;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        soxr_runtime_spec_t rt = soxr_runtime_spec(1);
        resample_ctx r = {.path = path,
                          .out = out,
                          .skip = j0 - (s0 / in_step) * out_step,
                          .want = want,
                          .buffer_len = DECODE_BLOCK_FRAMES};
        r.soxr = soxr_create(in_rate, target_rate, 1, &e, &io, &q, &rt);
        r.buffer = ad_malloc(r.buffer_len * sizeof *r.buffer, path);
        if (!r.soxr || e) {
            rc = ad_fail("%s: cannot create a %d -> %d Hz resampler: %s", path, in_rate,
                         target_rate, e ? soxr_strerror(e) : "unknown error");
        } else if (!r.buffer) {
            rc = AD_ERR;
        } else {
            rc = decode_mono(path, sf, &info, s0, s1, resample_sink, &r);
            if (rc >= 0) rc = resample_flush(&r);
            /* The resampler's last output can fall short of round(frames * ratio) by a
             * sample at the file's end; that sample stays 0 (calloc), i.e. silence. */
            const int64_t tolerated = s1 == info.frames ? 1 : 0;
            if (rc >= 0 && r.seen - r.skip < want - tolerated)
                rc = ad_fail("%s: resampler produced %lld of %lld samples", path,
                             (long long)(r.seen - r.skip), (long long)want);
        }
        if (r.soxr) soxr_delete(r.soxr);
        free(r.buffer);
    }
    sf_close(sf);
    if (rc < 0) {
        free(out);
        return AD_ERR;
    }
    *samples = out;
    *n = want;
    return AD_OK;
}

/* ---- writing ------------------------------------------------------------------------ */

/* libsndfile writes the WAV into memory through virtual IO; the bytes then go to disk with
 * ad_write_file_atomic, so the file appears whole or not at all. */
typedef struct {
    unsigned char *data;
    sf_count_t size, cap, pos;
    int failed;
} mem_file;

static sf_count_t mem_len(void *user) {
    return ((mem_file *)user)->size;
}

static sf_count_t mem_seek(sf_count_t offset, int whence, void *user) {
    mem_file *m = user;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    if (base + offset < 0) return -1;
    m->pos = base + offset;
    return m->pos;
}

static sf_count_t mem_read(void *ptr, sf_count_t count, void *user) {
    mem_file *m = user;
    sf_count_t avail = m->size - m->pos;
    if (avail <= 0 || count <= 0) return 0;
    if (count > avail) count = avail;
    memcpy(ptr, m->data + m->pos, (size_t)count);
    m->pos += count;
    return count;
}

static sf_count_t mem_write(const void *ptr, sf_count_t count, void *user) {
    mem_file *m = user;
    if (count <= 0) return 0;
    sf_count_t end = m->pos + count;
    if (end > m->cap) {
        sf_count_t cap = m->cap ? m->cap : 4096;
        while (cap < end)
            cap *= 2;
        unsigned char *d = realloc(m->data, (size_t)cap);
        if (!d) {
            m->failed = 1;
            return 0;
        }
        m->data = d;
        m->cap = cap;
    }
    if (m->pos > m->size) memset(m->data + m->size, 0, (size_t)(m->pos - m->size));
    memcpy(m->data + m->pos, ptr, (size_t)count);
    m->pos = end;
    if (end > m->size) m->size = end;
    return count;
}

static sf_count_t mem_tell(void *user) {
    return ((mem_file *)user)->pos;
}

int ad_audio_write_wav16(const char *path, const float *samples, int64_t n, int sample_rate) {
    if (sample_rate < 1 || sample_rate > MAX_SAMPLE_RATE)
        return ad_fail("writing %s: sample rate %d Hz is out of range", path, sample_rate);
    if (n < 0) return ad_fail("writing %s: negative sample count", path);
    SF_VIRTUAL_IO vio = {mem_len, mem_seek, mem_read, mem_write, mem_tell};
    mem_file m = {0};
    SF_INFO info = {
        .samplerate = sample_rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *sf = sf_open_virtual(&vio, SFM_WRITE, &info, &m);
    if (!sf) {
        free(m.data);
        return ad_fail("writing %s: libsndfile refused a 16-bit WAV: %s", path, sf_strerror(NULL));
    }
    short block[DECODE_BLOCK_FRAMES];
    int rc = AD_OK;
    for (int64_t pos = 0; pos < n && rc == AD_OK;) {
        int64_t len = n - pos < DECODE_BLOCK_FRAMES ? n - pos : DECODE_BLOCK_FRAMES;
        for (int64_t i = 0; i < len; i++) {
            double v = nearbyint((double)samples[pos + i] * 32768.0);
            if (!(v >= -32768.0)) v = -32768.0; /* also maps NaN to the rail, not UB */
            if (v > 32767.0) v = 32767.0;
            block[i] = (short)v;
        }
        if (sf_writef_short(sf, block, len) != len || m.failed)
            rc = ad_fail("writing %s: encoding failed: %s", path, sf_strerror(sf));
        pos += len;
    }
    if (sf_close(sf) != 0 && rc == AD_OK)
        rc = ad_fail("writing %s: closing the encoder failed", path);
    if (m.failed && rc == AD_OK) rc = ad_fail("writing %s: out of memory", path);
    if (rc == AD_OK) rc = ad_write_file_atomic(path, m.data, (size_t)m.size);
    free(m.data);
    return rc;
}

/* audistill report: compare runs (compressed models) by size on disk and translation quality:
 * a Markdown table and, through gnuplot, one size/BLEU Pareto plot per direction. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/report.h"
#include "io/file.h"

static const char *usage = "audistill report RUN_DIR... -o OUT_DIR [--baseline NAME]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Reads RUN_DIR/run.json of every run:\n"
           "  {\"name\": \"int4-24l\", \"bytes\": 4123456789,\n"
           "   \"parameters\": {\"layers\": 24, \"bits\": 4},\n"
           "   \"scores\": {\"en-de\": {\"bleu\": 21.3, \"chrf\": 51.2, \"chrf++\": 49.0, "
           "\"comet\": 0.81},\n"
           "              \"en-zh\": {\"bleu\": 30.1}}}\n"
           "(name defaults to the directory name; parameters and every metric are optional) and\n"
           "writes OUT_DIR/report.md (a table sorted by size, Pareto runs marked per direction)\n"
           "and OUT_DIR/pareto-<direction>.png (BLEU against size in MB on a log axis, the\n"
           "frontier connected, dominated runs grey) with its gnuplot script. Without gnuplot\n"
           "(or with AUDISTILL_GNUPLOT naming a missing program) the plots are skipped with a\n"
           "message and the exit status stays 0.\n\n"
           "  --baseline NAME  also a table of every run's size and BLEU as a percentage of\n"
           "                   run NAME's (e.g. the uncompressed teacher)\n\n"
           "A run.json may also carry \"comparisons\": paired bootstrap tests against other runs\n"
           "(`audistill run` writes them for evaluate.compare); the report lists them with the\n"
           "difference, its 95%% interval and p per direction.\n",
           usage);
}

/* The gnuplot executable, or NULL: $AUDISTILL_GNUPLOT if set, else "gnuplot" on PATH. */
static char *find_gnuplot(void) {
    const char *want = getenv("AUDISTILL_GNUPLOT");
    if (want) return want[0] && access(want, X_OK) == 0 ? ad_strdup(want, "path") : NULL;
    const char *path = getenv("PATH");
    if (!path) return NULL;
    char *copy = ad_strdup(path, "PATH");
    if (!copy) return NULL;
    char *found = NULL, *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char *p = ad_path_join(d[0] ? d : ".", "gnuplot");
        struct stat st;
        if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0)
            found = p;
        else
            free(p);
    }
    free(copy);
    return found;
}

static int run_gnuplot(const char *gnuplot, const char *script) {
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return ad_fail("cannot start gnuplot: %s", strerror(errno));
    if (pid == 0) {
        execl(gnuplot, "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ad_fail("waiting for gnuplot: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return ad_fail("gnuplot %s failed (status %d)", script,
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return AD_OK;
}

static bool is_png(const char *path) {
    unsigned char sig[8];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    bool ok = fread(sig, 1, 8, f) == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8);
    fclose(f);
    return ok;
}

/* One direction's plot: the script (kept, pointing at the final PNG) and the PNG, which
 * gnuplot draws under a temporary name that is renamed only when it is a complete PNG. */
static int plot_direction(const ad_run_info *runs, int n, const char *dir, const char *out_dir,
                          const char *gnuplot, FILE *md) {
    char name[128];
    int rc = AD_ERR;
    snprintf(name, sizeof name, "pareto-%s.png", dir);
    char *png = ad_path_join(out_dir, name);
    snprintf(name, sizeof name, ".pareto-%s.png.tmp", dir);
    char *png_tmp = ad_path_join(out_dir, name);
    snprintf(name, sizeof name, "pareto-%s.gp", dir);
    char *gp = ad_path_join(out_dir, name);
    snprintf(name, sizeof name, ".pareto-%s.gp.tmp", dir);
    char *gp_tmp = ad_path_join(out_dir, name);
    char *script = NULL, *tmp_script = NULL;
    if (!png || !png_tmp || !gp || !gp_tmp) goto done;
    script = ad_report_gnuplot(runs, n, dir, png);
    if (!script) {
        if (!ad_error()[0]) rc = AD_OK; /* no run has BLEU for this direction */
        goto done;
    }
    tmp_script = ad_report_gnuplot(runs, n, dir, png_tmp);
    if (!tmp_script || ad_write_file_atomic(gp, script, strlen(script)) < 0) goto done;
    if (!gnuplot) {
        fprintf(md, "\nPlot for %s skipped: gnuplot was not found (script: %s).\n", dir, name);
        printf("plot for %s skipped: gnuplot not found (install gnuplot-nox; script kept in "
               "%s)\n",
               dir, gp);
        rc = AD_OK;
        goto done;
    }
    if (ad_write_file_atomic(gp_tmp, tmp_script, strlen(tmp_script)) < 0) goto done;
    rc = run_gnuplot(gnuplot, gp_tmp);
    unlink(gp_tmp);
    if (rc == AD_OK && !is_png(png_tmp)) rc = ad_fail("gnuplot wrote no PNG to %s", png_tmp);
    if (rc == AD_OK && rename(png_tmp, png) != 0)
        rc = ad_fail("cannot rename %s to %s: %s", png_tmp, png, strerror(errno));
    if (rc < 0) {
        unlink(png_tmp);
        goto done;
    }
    fprintf(md, "\n![BLEU against size, %s](pareto-%s.png)\n", dir, dir);
    printf("wrote %s\n", png);
done:
    free(png), free(png_tmp), free(gp), free(gp_tmp), free(script), free(tmp_script);
    return rc;
}

int cmd_report(int argc, char **argv) {
    const char *out_dir = NULL, *baseline = NULL;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    int n_dirs = 0;
    if (!dirs) return cli_fail("report");
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            print_help();
            free(dirs);
            return 0;
        } else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
            out_dir = argv[++i];
        } else if (!strcmp(argv[i], "--baseline") && i + 1 < argc) {
            baseline = argv[++i];
        } else if (argv[i][0] == '-') {
            free(dirs);
            return cli_usage_error("report", usage, "unexpected argument '%s'", argv[i]);
        } else {
            dirs[n_dirs++] = argv[i];
        }
    }
    if (!out_dir || n_dirs == 0) {
        free(dirs);
        return cli_usage_error("report", usage, "at least one RUN_DIR and -o OUT_DIR are needed");
    }
    int rc = 1, n_runs = 0;
    ad_run_info *runs = ad_calloc((size_t)n_dirs, sizeof *runs, "runs");
    char *table = NULL, *relative = NULL, *paired = NULL, *md_buf = NULL, *gnuplot = NULL;
    size_t md_len = 0;
    FILE *md = NULL;
    if (!runs) goto done;
    for (int i = 0; i < n_dirs; i++) {
        char *path = ad_path_join(dirs[i], "run.json"), *text = NULL;
        size_t len;
        if (!path || ad_read_file(path, 1 << 20, &text, &len) < 0) {
            free(path);
            goto done;
        }
        /* The default name is the directory's last component. */
        const char *base = dirs[i] + strlen(dirs[i]);
        while (base > dirs[i] && base[-1] == '/')
            base--;
        char *trimmed = strndup(dirs[i], (size_t)(base - dirs[i]));
        const char *slash = trimmed ? strrchr(trimmed, '/') : NULL;
        int prc = trimmed ? ad_run_parse(text, path, slash ? slash + 1 : trimmed, &runs[i])
                          : ad_fail("out of memory");
        free(trimmed), free(path), free(text);
        if (prc < 0) goto done;
        n_runs++;
    }
    table = ad_report_markdown(runs, n_runs);
    if (!table) goto done;
    if (baseline && !(relative = ad_report_relative(runs, n_runs, baseline))) goto done;
    if (!(paired = ad_report_comparisons(runs, n_runs))) goto done;
    if (ad_mkdir_p(out_dir) < 0) goto done;
    md = open_memstream(&md_buf, &md_len);
    if (!md) {
        ad_fail("out of memory");
        goto done;
    }
    fputs(table, md);
    if (relative) fputs(relative, md);
    fputs(paired, md);
    const char *directions[AD_REPORT_MAX_DIRECTIONS];
    int n_directions;
    if (ad_report_directions(runs, n_runs, directions, &n_directions) < 0) goto done;
    gnuplot = find_gnuplot();
    for (int d = 0; d < n_directions; d++) {
        ad_error_clear();
        if (plot_direction(runs, n_runs, directions[d], out_dir, gnuplot, md) < 0) goto done;
    }
    if (fclose(md) != 0) {
        md = NULL;
        ad_fail("out of memory");
        goto done;
    }
    md = NULL;
    char *md_path = ad_path_join(out_dir, "report.md");
    int wrc = md_path ? ad_write_file_atomic(md_path, md_buf, md_len) : AD_ERR;
    if (wrc == AD_OK) printf("wrote %s (%d runs)\n", md_path, n_runs);
    free(md_path);
    if (wrc < 0) goto done;
    rc = 0;
done:
    if (rc) cli_fail("report");
    if (md) fclose(md);
    for (int i = 0; i < n_runs; i++)
        ad_run_free(&runs[i]);
    free(runs), free(table), free(relative), free(paired), free(md_buf), free(gnuplot), free(dirs);
    return rc;
}

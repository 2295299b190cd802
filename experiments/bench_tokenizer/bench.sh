#!/usr/bin/env bash
# Tokenizer speed: audistill's C tokenizer vs Hugging Face `tokenizers` (the Rust backend of
# transformers' Qwen2TokenizerFast), one thread each, on the same lines: the fixture texts
# (tests/fixtures/tokenizer/qwen2_sentences.txt: 600 sentences, 300 tricky strings, 4 long
# runs) repeated REPEAT times. Both load the same vocab.json + merges.txt + 6 special tokens;
# the ids must be identical (compared by hash). Needs a build of audistill_lib, a C compiler,
# pkg-config, and python3 with transformers.
#   bash experiments/bench_tokenizer/bench.sh [BUILD_DIR=build] [REF=../shared/ref] [REPEAT=30]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
ref=${2:-$root/../shared/ref}
repeat=${3:-30}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -f "$build/libaudistill_lib.a" ] || { echo "no $build/libaudistill_lib.a: build first" >&2; exit 1; }
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$root/src" "$root/experiments/bench_tokenizer/bench_tokenizer.c" \
  "$build/libaudistill_lib.a" $(pkg-config --libs libcjson libpcre2-8 libutf8proc) -lm -o "$tmp/bench"
awk 'NR % 2 == 1' "$root/tests/fixtures/tokenizer/qwen2_sentences.txt" >"$tmp/one"
for _ in $(seq 1 "$repeat"); do cat "$tmp/one"; done >"$tmp/text"

ours=$(OMP_NUM_THREADS=1 "$tmp/bench" "$ref/qwen2-tokenizer" "$tmp/text")
theirs=$(RAYON_NUM_THREADS=1 python3 - "$ref" "$tmp/text" <<'PY'
import json, sys, time
ref, path = sys.argv[1:3]
lines = []
for l in open(path, encoding="utf-8", newline="\n"):
    l = l.rstrip("\n")
    out, i = [], 0
    while i < len(l):
        if l[i] == "\\" and i + 1 < len(l):
            c = l[i + 1]
            out.append({"n": "\n", "r": "\r", "0": "\0"}.get(c, c))
            i += 2
        else:
            out.append(l[i])
            i += 1
    lines.append("".join(out))
from transformers import AddedToken, Qwen2TokenizerFast
t0 = time.perf_counter()
vocab = json.load(open(ref + "/qwen2-tokenizer/vocab.json", encoding="utf-8"))
merges = [tuple(l.rstrip("\n").split(" ")) for l in open(ref + "/qwen2-tokenizer/merges.txt", encoding="utf-8")
          if l.strip() and not l.startswith("#")]
tok = Qwen2TokenizerFast(vocab=vocab, merges=merges)
tok.add_tokens([AddedToken(s, special=True) for s in ["<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]], special_tokens=True)
t1, c1 = time.perf_counter(), time.process_time()
enc = tok._tokenizer.encode_batch(lines, add_special_tokens=False)
t2, c2 = time.perf_counter(), time.process_time()
h, total = 1469598103934665603, 0
for e in enc:
    for i in e.ids:
        h = ((h ^ (i + 1)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    total += len(e.ids)
print(f"load_s {t1 - t0:.4f} encode_s {t2 - t1:.4f} encode_cpu_s {c2 - c1:.4f} bytes {sum(len(l.encode()) for l in lines)} lines {len(lines)} ids {total} hash {h:016x}")
PY
)
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
[ "$(field "$ours" hash)" = "$(field "$theirs" hash)" ] && same=identical || same=DIFFERENT
bytes=$(field "$ours" bytes)
echo "text: $bytes bytes, $(field "$ours" lines) lines, $(field "$ours" ids) ids; ids $same"
printf '%-28s %8s %10s %10s\n' "" "load s" "encode s" "MB/s"
for who in audistill tokenizers; do
  line=$ours; [ $who = tokenizers ] && line=$theirs
  printf '%-28s %8s %10s %10.2f\n' "$who (1 thread)" "$(field "$line" load_s)" "$(field "$line" encode_s)" \
    "$(awk -v b="$bytes" -v s="$(field "$line" encode_s)" 'BEGIN {print b / s / 1e6}')"
done
echo "tokenizers encode CPU time $(field "$theirs" encode_cpu_s) s (one thread: about its wall time)"
awk -v a="$(field "$ours" encode_s)" -v b="$(field "$theirs" encode_s)" \
  'BEGIN {printf "encode throughput ratio audistill / tokenizers: %.2f\n", b / a}'
[ "$same" = identical ]

#!/usr/bin/env bash
# Tokenizer speed: audistill's C tokenizer vs Hugging Face `tokenizers` (Qwen2TokenizerFast,
# Rust), one thread each, on the same text: the 600 fixture sentences repeated to ~2 MB.
#   bash experiments/bench_tokenizer/bench.sh [build/audistill] [../shared/ref]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/build/audistill}
ref=${2:-$root/../shared/ref}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk 'NR % 2 == 1' "$root/tests/fixtures/tokenizer/qwen2_sentences.txt" >"$tmp/one"
for i in $(seq 1 25); do cat "$tmp/one"; done >"$tmp/text"
bytes=$(wc -c <"$tmp/text")
start=$(date +%s.%N)
OMP_NUM_THREADS=1 "$bin" tokenize --tokenizer "$ref/qwen2-tokenizer" <"$tmp/text" >"$tmp/ours"
end=$(date +%s.%N)
ours=$(echo "$end - $start" | awk '{print $1 - $3}')
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 - "$ref" "$tmp/text" "$tmp/theirs" <<'PY'
import json, sys, time
from transformers import AddedToken, Qwen2TokenizerFast
ref, text, out = sys.argv[1:4]
vocab = json.load(open(ref + "/qwen2-tokenizer/vocab.json", encoding="utf-8"))
merges = [tuple(l.rstrip("\n").split(" ")) for l in open(ref + "/qwen2-tokenizer/merges.txt", encoding="utf-8") if l.strip() and not l.startswith("#")]
t0 = time.perf_counter()
tok = Qwen2TokenizerFast(vocab=vocab, merges=merges)
tok.add_tokens([AddedToken(s, special=True) for s in ["<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]], special_tokens=True)
t1 = time.perf_counter()
lines = [l.rstrip("\n").replace("\\n", "\n") for l in open(text, encoding="utf-8")]
t2 = time.perf_counter()
ids = [tok._tokenizer.encode(l, add_special_tokens=False).ids for l in lines]
t3 = time.perf_counter()
with open(out, "w") as f:
    for x in ids:
        f.write(" ".join(map(str, x)) + "\n")
print(f"hf_load_s {t1 - t0:.3f} hf_encode_s {t3 - t2:.3f}")
PY
hf=$(tail -1 "$tmp/theirs.time" 2>/dev/null || true)
cmp -s "$tmp/ours" "$tmp/theirs" && same=identical || same=DIFFERENT
echo "text: $bytes bytes, $(wc -l <"$tmp/text") lines; ids $same"
echo "audistill (load + encode, 1 thread): ${ours}s -> $(awk -v b="$bytes" -v s="$ours" 'BEGIN {printf "%.2f", b / s / 1e6}') MB/s"

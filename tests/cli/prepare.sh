#!/usr/bin/env bash
# audistill prepare on a small synthetic corpus: h5py reads the set; its texts are the corpus
# texts; its target ids are `audistill tokenize` of them plus the end token; its features are
# `audistill features` of the same audio; bad input fails clearly.
set -uo pipefail
bin=$AUDISTILL_BIN
vocab=$AUDISTILL_REF/qwen2-tokenizer
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed (scripts/install-deps.sh installs it)"; exit 77; }
[ -d "$vocab" ] || { echo "SKIP: $vocab is absent (shared reference files)"; exit 77; }
python3 -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: h5py/numpy not installed"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/prepare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$bin" synth --out "$tmp/syn" --train 6 --dev 2 --eval 2 --talks 1 >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
"$bin" prepare --data "$tmp/syn" --split train --tokenizer "$vocab" --out "$tmp/train.h5" >/dev/null 2>"$tmp/err" && ok || { bad "prepare failed"; cat "$tmp/err"; }
"$bin" tokenize --tokenizer "$vocab" <"$tmp/syn/train/text/txt/ACL.6060.train.en-xx.de.txt" >"$tmp/de.ids"
"$bin" features "$tmp/syn/train/segmented_wavs/gold/sent_2.wav" -o "$tmp/sent2.npy" --valid-only >/dev/null 2>&1 || bad "features"
python3 - "$tmp/train.h5" "$tmp/syn/train/text/txt/ACL.6060.train.en-xx.de.txt" "$tmp/de.ids" "$tmp/sent2.npy" <<'PY' && ok || bad "the prepared set does not hold what the tools compute"
import sys, h5py, numpy as np
h = h5py.File(sys.argv[1], "r")
texts = open(sys.argv[2], encoding="utf-8").read().splitlines()
ids = [list(map(int, l.split())) for l in open(sys.argv[3]).read().splitlines()]
assert h.attrs["format"] == "audistill-prepared" and h.attrs["count"] == len(texts) == 6
assert [t.decode() for t in h["text/de"][:]] == texts
off = h["ids/de/offset"][:]
for i, want in enumerate(ids):
    got = list(h["ids/de/tokens"][off[i]:off[i + 1]])
    assert got == want + [151643], (i, got, want)
fo, valid = h["frame_offset"][:], h["valid_frames"][:]
feat = h["features"][fo[1]:fo[2]]  # time-major
ref = np.load(sys.argv[4])          # (n_mels, valid frames)
assert ref.shape[1] == valid[1] and feat.shape[0] == valid[1] + 2, (ref.shape, feat.shape, valid[1])
assert np.array_equal(feat[:valid[1]].T, ref)
before = list(h["prompt/de/before_audio"][:]); after = list(h["prompt/de/after_audio"][:])
assert before == [151647] and after[0] == 151648 and h["prompt/de"].attrs["text"].endswith("German:")
PY
"$bin" prepare --data "$tmp/syn" --split nope --tokenizer "$vocab" --out "$tmp/x.h5" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "no such split" "$tmp/err" && [ ! -e "$tmp/x.h5" ] && ok || bad "missing split: rc $rc"
rm "$tmp/syn/dev/segmented_wavs/gold/sent_2.wav"
"$bin" prepare --data "$tmp/syn" --split dev --tokenizer "$vocab" --out "$tmp/x.h5" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "sent_2.wav is missing" "$tmp/err" && ok || bad "missing audio: rc $rc"
"$bin" prepare --data "$tmp/syn" --split train --tokenizer "$vocab" --out "$tmp/y.h5" --langs de,fr 2>/dev/null; [ $? -eq 2 ] && ok || bad "unknown language"
# English transcription as a task (the demo teacher's auxiliary task): targets are the English texts.
"$bin" prepare --data "$tmp/syn" --split train --tokenizer "$vocab" --out "$tmp/en.h5" --langs de,en >/dev/null 2>"$tmp/err" || { bad "prepare --langs de,en"; cat "$tmp/err"; }
"$bin" tokenize --tokenizer "$vocab" <"$tmp/syn/train/text/txt/ACL.6060.train.en-xx.en.txt" >"$tmp/en.ids"
python3 - "$tmp/en.h5" "$tmp/en.ids" <<'PY' && ok || bad "the transcription task's targets or prompt are wrong"
import sys, h5py
h = h5py.File(sys.argv[1], "r")
ids = [list(map(int, l.split())) for l in open(sys.argv[2]).read().splitlines()]
off = h["ids/en/offset"][:]
for i, want in enumerate(ids):
    assert list(h["ids/en/tokens"][off[i]:off[i + 1]]) == want + [151643], i
assert h["prompt/en"].attrs["text"].endswith("Transcribe the English speech:")
PY
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]

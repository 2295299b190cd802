#!/usr/bin/env bash
# audistill synth: a tiny corpus has the ACL 60/60 layout, one text line per 16 kHz mono WAV,
# distinct sentences across splits, a talk whose segmentation list matches its audio, the same
# bytes (text and audio) when rerun with the same seed, and clear usage errors.
set -uo pipefail
bin=$AUDISTILL_BIN
py=${PYTHON:-python3}
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/synth.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

$bin synth --out "$tmp/a" --seed 5 --train 20 --dev 5 --eval 5 --talks 1 >"$tmp/a.log" 2>&1 \
  && ok || { bad "synth failed"; cat "$tmp/a.log"; }
grep -q "30 sentences" "$tmp/a.log" && ok || bad "summary line: $(cat "$tmp/a.log")"

for split_n in train:20 dev:5 eval:5; do
  s=${split_n%%:*} n=${split_n#*:}
  for lang in en de zh; do
    f="$tmp/a/$s/text/txt/ACL.6060.$s.en-xx.$lang.txt"
    [ "$(wc -l <"$f" 2>/dev/null)" = "$n" ] && ok || bad "$f: not $n lines"
  done
  wavs=$(ls "$tmp/a/$s/segmented_wavs/gold" 2>/dev/null | wc -l)
  [ "$wavs" = "$n" ] && ok || bad "$s: $wavs wavs, want $n"
  [ -f "$tmp/a/$s/segmented_wavs/gold/sent_1.wav" ] && [ -f "$tmp/a/$s/segmented_wavs/gold/sent_$n.wav" ] \
    && ok || bad "$s: sent_1..sent_$n"
done
[ "$(cat "$tmp/a/eval/FILE_ORDER" 2>/dev/null)" = "talk_1" ] && ok || bad "FILE_ORDER"
[ -f "$tmp/a/eval/full_wavs/talk_1.wav" ] && ok || bad "talk_1.wav missing"
ls -d "$tmp"/a.tmp-* >/dev/null 2>&1 && bad "temporary directory left behind" || ok

# Audio format, distinct sentences, and the talk's YAML against the talk's samples.
$py - "$tmp/a" <<'PY' && ok || bad "layout check (python)"
import re, sys, wave
root = sys.argv[1]
def read(path):
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        return w.readframes(w.getnframes())
seen = set()
for split, n in (("train", 20), ("dev", 5), ("eval", 5)):
    en = open(f"{root}/{split}/text/txt/ACL.6060.{split}.en-xx.en.txt", encoding="utf-8").read().splitlines()
    zh = open(f"{root}/{split}/text/txt/ACL.6060.{split}.en-xx.zh.txt", encoding="utf-8").read().splitlines()
    assert all(s and s[0].isupper() and s[-1] in ".?" for s in en), en
    assert all(s[-1] in "。？" for s in zh), zh
    assert not seen & set(en) and len(set(en)) == n, "duplicate sentences"
    seen |= set(en)
    for i in range(1, n + 1):
        assert len(read(f"{root}/{split}/segmented_wavs/gold/sent_{i}.wav")) > 2 * 8000
talk = read(f"{root}/eval/full_wavs/talk_1.wav")
entries = open(f"{root}/eval/text/txt/ACL.6060.eval.en-xx.yaml").read().splitlines()
assert len(entries) == 5, entries
end = 0.0
for i, line in enumerate(entries, 1):
    m = re.fullmatch(r"- \{duration: ([0-9.]+), offset: ([0-9.]+), speaker_id: talk_1, wav: talk_1.wav\}", line)
    assert m, line
    dur, off = float(m.group(1)), float(m.group(2))
    assert 0.3 - 1e-6 <= off - end <= 1.0 + 1e-6, (off, end)
    end = off + dur
    a, b = round(off * 16000) * 2, round((off + dur) * 16000) * 2
    assert talk[a:b] == read(f"{root}/eval/segmented_wavs/gold/sent_{i}.wav"), f"entry {i} is not sent_{i}"
PY

# Same seed: the same bytes, text and audio. Another seed: other sentences.
$bin synth --out "$tmp/b" --seed 5 --train 20 --dev 5 --eval 5 --talks 1 >/dev/null 2>&1 || bad "rerun failed"
diff -r "$tmp/a" "$tmp/b" >"$tmp/diff.txt" && ok || { bad "rerun with the same seed differs"; head "$tmp/diff.txt"; }
$bin synth --out "$tmp/c" --seed 6 --train 20 --dev 5 --eval 5 --talks 1 >/dev/null 2>&1 || bad "seed 6 failed"
cmp -s "$tmp/a/train/text/txt/ACL.6060.train.en-xx.en.txt" "$tmp/c/train/text/txt/ACL.6060.train.en-xx.en.txt" \
  && bad "seed 6 gives the same sentences" || ok

# Errors: usage (2), existing output (1), espeak-ng failing (1, nothing left behind).
$bin synth --help | grep -q "segmented_wavs/gold/sent_N.wav" && ok || bad "--help"
expect_rc() { # rc, text, args...
  local want=$1 text=$2; shift 2
  $bin synth "$@" >"$tmp/out.txt" 2>&1
  local rc=$?
  [ $rc -eq "$want" ] && grep -q -- "$text" "$tmp/out.txt" && ok \
    || { bad "synth $*: rc $rc (want $want), output: $(cat "$tmp/out.txt")"; }
}
expect_rc 2 "--out DIR is required" --train 3
expect_rc 2 "wants an integer" --out "$tmp/x" --train many
expect_rc 2 "--talks 6 exceeds --eval 5" --out "$tmp/x" --eval 5 --talks 6
expect_rc 2 "unexpected argument" --out "$tmp/x" --bogus 1
expect_rc 1 "already exists" --out "$tmp/a" --train 2 --dev 1 --eval 1 --talks 0
expect_rc 1 "exited with status 1" --out "$tmp/x" --train 2 --dev 1 --eval 1 --talks 1 --espeak false
[ ! -e "$tmp/x" ] && ! ls -d "$tmp"/x.tmp-* >/dev/null 2>&1 && ok || bad "failed run left files"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# audistill segment: on a talk made by `audistill synth` (known pauses of 0.3-1.0 s between
# sentences), one segment per sentence, its boundaries at the known ones within the padding
# plus the silence espeak-ng leaves after a sentence; with a small maximum every segment stays
# under it; bad input fails clearly.
set -uo pipefail
bin=$AUDISTILL_BIN
py=${PYTHON:-python3}
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/segment.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

$bin synth --out "$tmp/c" --seed 11 --train 1 --dev 1 --eval 10 --talks 1 >/dev/null 2>&1 || bad "synth failed"
talk="$tmp/c/eval/full_wavs/talk_1.wav"
known="$tmp/c/eval/text/txt/ACL.6060.eval.en-xx.yaml"

$bin segment "$talk" --max-seconds 20 -o "$tmp/seg.yaml" >"$tmp/seg.log" 2>&1 && ok || { bad "segment failed"; cat "$tmp/seg.log"; }
$bin segment "$talk" --max-seconds 1.5 --pad 0.05 -o "$tmp/short.yaml" >/dev/null 2>&1 && ok || bad "segment --max-seconds 1.5 failed"

$py - "$known" "$tmp/seg.yaml" "$tmp/short.yaml" <<'PY' && ok || bad "boundary check (python)"
import re, sys
def load(path):
    out = []
    for line in open(path).read().splitlines():
        m = re.fullmatch(r"- \{duration: ([0-9.]+), offset: ([0-9.]+), speaker_id: talk_1, wav: talk_1.wav\}", line)
        assert m, f"{path}: {line}"
        out.append((float(m.group(2)), float(m.group(2)) + float(m.group(1))))
    return out
known, found, short = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
assert len(found) == len(known), f"{len(found)} segments for {len(known)} sentences"
pad = 0.1
for (ka, kb), (fa, fb) in zip(known, found):
    # espeak-ng starts speaking at once and ends with up to ~0.45 s of silence.
    assert ka - pad - 0.05 <= fa <= ka + 0.05, f"start {fa:.3f} vs sentence start {ka:.3f}"
    assert kb - 0.5 <= fb <= kb + pad + 0.05, f"end {fb:.3f} vs sentence end {kb:.3f}"
for a, b in zip(found, found[1:]):
    assert a[1] <= b[0], "overlapping segments"
assert all(b - a <= 1.5 + 1e-9 for a, b in short), max(b - a for a, b in short)
assert len(short) > len(known), "nothing was cut at 1.5 s"
# Cutting loses no speech: every sentence's middle lies inside some short segment.
for ka, kb in known:
    mid = (ka + kb) / 2 - 0.2
    assert any(a <= mid <= b for a, b in short), f"sentence at {ka:.2f} not covered"
PY

expect_rc() { # rc, text, args...
  local want=$1 text=$2; shift 2
  $bin segment "$@" >"$tmp/out.txt" 2>&1
  local rc=$?
  [ $rc -eq "$want" ] && grep -q -- "$text" "$tmp/out.txt" && ok \
    || { bad "segment $*: rc $rc (want $want), output: $(cat "$tmp/out.txt")"; }
}
$bin segment --help | grep -q "max-seconds" && ok || bad "--help"
expect_rc 2 "-o SEGMENTS.yaml is required" "$talk"
expect_rc 2 "an AUDIO file is required" -o "$tmp/x.yaml"
expect_rc 2 "--max-seconds wants a number" "$talk" --max-seconds abc -o "$tmp/x.yaml"
expect_rc 2 "at least 0.5" "$talk" --max-seconds 0.1 -o "$tmp/x.yaml"
expect_rc 1 "missing.wav" "$tmp/missing.wav" -o "$tmp/x.yaml"
printf 'not audio' >"$tmp/text.wav"
expect_rc 1 "text.wav" "$tmp/text.wav" -o "$tmp/x.yaml"
[ ! -e "$tmp/x.yaml" ] && ok || bad "a failed run wrote output"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

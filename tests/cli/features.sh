#!/usr/bin/env bash
# audistill features: exit codes and messages, and the .npy it writes read back by numpy and
# compared with transformers' features (fixtures from tests/fixtures/make_audio_fixtures.py).
set -euo pipefail
BIN=${AUDISTILL_BIN:?}
FIX=${AUDISTILL_FIXTURES:?}/audio
PY=${PYTHON:-python3}
TMP=${AUDISTILL_TEST_TMP:-/tmp}/features_$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$BIN" features --help | grep -q "valid-only" || fail "--help"
set +e
"$BIN" features >/dev/null 2>&1; [ $? -eq 2 ] || fail "no arguments should exit 2"
"$BIN" features "$FIX/synth_medium.wav" >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing -o should exit 2"
"$BIN" features "$FIX/synth_medium.wav" -o "$TMP/x.npy" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option should exit 2"
"$BIN" features "$FIX/synth_medium.wav" -o "$TMP/x.npy" --offset -1 >/dev/null 2>&1; [ $? -eq 2 ] || fail "negative offset should exit 2"
msg=$("$BIN" features "$TMP/nothing.wav" -o "$TMP/x.npy" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$msg" | grep -q "nothing.wav" || fail "missing input: rc $rc, '$msg'"
msg=$("$BIN" features "$FIX/jfk_features.npy" -o "$TMP/x.npy" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$msg" | grep -q "not a readable audio file" || fail "non-audio input: rc $rc, '$msg'"
msg=$("$BIN" features "$FIX/synth_medium.wav" --offset 9 -o "$TMP/x.npy" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$msg" | grep -q "past the end" || fail "offset past the end: rc $rc, '$msg'"
set -e
[ ! -e "$TMP/x.npy" ] || fail "a failed run left an output file"

"$BIN" features "$FIX/synth_medium.wav" -o "$TMP/full.npy"
"$BIN" features "$FIX/synth_medium.wav" -o "$TMP/valid.npy" --valid-only
"$BIN" features "$FIX/synth_medium.wav" -o "$TMP/range.npy" --valid-only --offset 1 --duration 1
JFK_FLAC=""
if [ -n "${AUDISTILL_REF:-}" ] && [ -f "$AUDISTILL_REF/audio/jfk.flac" ]; then
  JFK_FLAC="$TMP/jfk_flac.npy"
  "$BIN" features "$AUDISTILL_REF/audio/jfk.flac" -o "$JFK_FLAC" --valid-only
fi

if ! $PY -c "import numpy" 2>/dev/null; then
  echo "SKIP: numpy is not installed; exit codes checked, .npy contents not"
  exit 77
fi
$PY - "$TMP" "$FIX" "$JFK_FLAC" <<'PYEOF'
import sys
import numpy as np
tmp, fix, jfk_flac = sys.argv[1:4]
full = np.load(f"{tmp}/full.npy")
valid = np.load(f"{tmp}/valid.npy")
rng = np.load(f"{tmp}/range.npy")
want = np.load(f"{fix}/synth_medium_features.npy")
assert full.dtype == np.float32 and full.shape == (128, 3000), full.shape
assert valid.shape == (128, 331), valid.shape
assert rng.shape == (128, 100), rng.shape
err = np.abs(full[:, :335] - want).max()
assert err <= 1e-4, f"features differ from transformers by {err}"
assert np.array_equal(valid, full[:, :331])
print(f"synth_medium.wav: max |diff| {err:.3g} vs WhisperFeatureExtractor; shapes ok")
if jfk_flac:
    a = np.load(jfk_flac)
    ref = np.load(f"{fix}/jfk_features.npy")[:, :1100]
    assert a.shape == (128, 1100), a.shape
    # Decoding + resampling the 44.1 kHz FLAC gives slightly different samples than the
    # 16 kHz WAV; their features agree closely but not to float precision.
    d = np.abs(a - ref)
    print(f"jfk.flac features vs jfk.wav reference: max |diff| {d.max():.3g}, mean {d.mean():.3g}")
    assert d.mean() < 0.01 and d.max() < 0.5, (d.mean(), d.max())
print("1 passed, 0 failed")
PYEOF

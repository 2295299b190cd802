#!/usr/bin/env bash
# tests/gpu/check.sh's benchmark binary on the CUDA emulator, at the tiny model's widths: it
# runs its warm-ups, timed steps and the profiled step, prints its JSON line with finite losses,
# and the op profile accounts for the profiled step (so a GPU lease is not spent finding a
# crash in the benchmark); with GEMM tuning (bf16-tuned) it tunes the step's GEMMs and computes
# the same losses; the teacher reuses the pruned student's audio encoder output, and computes the
# same losses running its own (bf16-separate).
#
# Then the flash attention kernels inside whole distillation steps: the tiny models have head
# dims the kernels do not take (6, 8), so two fixtures are re-headed with their weights
# unchanged: tiny_a's audio encoder with one head of 16 (bidirectional, key lengths), and
# inspect_tiny's decoder with 2 query heads of 16 sharing one kv head (causal, GQA). Each runs
# with attention forced through the batched bf16 GEMMs and as AUTO picks it under bf16 GEMMs:
# the second run must really take the flash kernels (its call count) and finish, and both runs'
# losses (same init, same batch) must agree to 1e-3. That is a sanity check only: a random tiny model's loss barely
# depends on attention (a causal mask leaking one key moved it by 6e-5); the kernels' precision
# is checked op by op in test_cuda_ops and test_cuda_backward.
# Usage: bench_smoke.sh AUDISTILL BENCH FIXTURES TMPDIR
set -uo pipefail
bin=$1 bench=$2 fx=$3
tmp=$(mktemp -d "$4/bench_smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
PY=${PYTHON:-python3}

# prune_pair SRC NAME: a bf16 teacher (all layers) and student (decoder layer 1 dropped)
prune_pair() {
  local spec
  for spec in "teacher []" "student [1]"; do
    set -- $spec
    printf 'teacher: %s\noutput: %s/%s-%s\noutput_dtype: bf16\nprune:\n  drop_decoder_layers: %s\n' \
      "$src" "$tmp" "$name" "$1" "$2" >"$tmp/$name-$1.yaml"
    "$bin" prune --config "$tmp/$name-$1.yaml" >"$tmp/$name-$1.log" 2>&1 ||
      { cat "$tmp/$name-$1.log"; echo "FAIL: bf16 $name $1"; exit 1; }
  done
}

src=$fx/tiny_a name=tiny prune_pair
status=0
for mode in f32 bf16 bf16-flash bf16-tuned bf16-separate; do
  if ! "$bench" "$tmp/tiny-teacher" "$tmp/tiny-student" 2 100 8 2 $mode >"$tmp/$mode.json" 2>"$tmp/$mode.err"; then
    cat "$tmp/$mode.err"; echo "FAIL: bench_distill_step $mode"; status=1; continue
  fi
  cat "$tmp/$mode.json"
  "$PY" - "$tmp/$mode.json" "$tmp/$mode.err" <<'PY' || { echo "FAIL: $mode output"; status=1; }
import json, math, re, sys
r = json.load(open(sys.argv[1]))
for k in ("ms_per_step", "loss_first", "loss_last", "profiled_step_ms"):
    assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
err = open(sys.argv[2]).read()
m = re.search(r"^op profile \(cuda backend\): ([0-9.]+) s", err, re.M)
assert m, "no op profile"
in_ops = float(m.group(1)) * 1e3
assert 0.5 * r["profiled_step_ms"] < in_ops <= r["profiled_step_ms"] * 1.001, (in_ops, r["profiled_step_ms"])
# attention's rows are per kind: the decoder's causal one, here in the student's backward
for op in (re.escape("linear language_model.lm_head.weight"),
           r"attention_backward \(causal, head dim [0-9]+\)", "distill_loss"):
    assert re.search(r"^" + op + r" +[0-9]+ ", err, re.M), f"no {op} row"
print(f"profile: {in_ops:.0f} of {r['profiled_step_ms']:.0f} ms in table ops")
# every step trains on the same batch: its two key_len tables (the clips' encoder lengths, the
# rows' lengths) go to the device once, not once per attention call
print(f"key_len uploads: {r['key_len_uploads']}")
assert 1 <= r["key_len_uploads"] <= 2, r["key_len_uploads"]
PY
done

# GEMM tuning: the step's GEMM shapes each timed once (the emulator's three answers compute the
# same bits, and so does the bias written first), so the losses equal the untuned bf16 run's.
"$PY" - "$tmp/bf16.json" "$tmp/bf16-tuned.json" <<'PY' || { echo "FAIL: bf16-tuned"; status=1; }
import json, sys
plain, tuned = (json.load(open(p)) for p in sys.argv[1:])
print(f"GEMM tuning: {tuned['gemm_tuned']} problems tuned, {tuned['gemm_bias_first']} bias first")
assert plain["gemm_tuned"] == 0 and tuned["gemm_tuned"] >= 10, (plain["gemm_tuned"], tuned["gemm_tuned"])
for k in ("loss_first", "loss_last"):
    assert tuned[k] == plain[k], (k, tuned[k], plain[k])
PY

# The pruned student keeps the teacher's audio encoder: the teacher takes the student's encoder
# output (one encoder forward), which bf16-separate does not; the same losses bit for bit.
"$PY" - "$tmp/bf16.json" "$tmp/bf16-separate.json" <<'PY' || { echo "FAIL: shared encoder"; status=1; }
import json, sys
shared, separate = (json.load(open(p)) for p in sys.argv[1:])
print(f"shared encoder: {shared['shared_encoder']}, bf16-separate: {separate['shared_encoder']}")
assert shared["shared_encoder"] is True and separate["shared_encoder"] is False
for k in ("loss_first", "loss_last"):
    assert shared[k] == separate[k], (k, shared[k], separate[k])
PY
grep -q "^audio encoder: one forward, shared" "$tmp/bf16.err" &&
  [ "$(grep -cE "^conv1d audio_tower\.conv1\.weight +1 " "$tmp/bf16.err")" = 1 ] &&
  [ "$(grep -cE "^conv1d audio_tower\.conv1\.weight +2 " "$tmp/bf16-separate.err")" = 1 ] ||
  { echo "FAIL: the profiled step's conv1 calls (1 shared, 2 separate)"; grep -E "^audio encoder|^conv1d" "$tmp/bf16.err" "$tmp/bf16-separate.err"; status=1; }

# re-headed fixtures: FIXTURE NAME FRAMES JSON-EDIT
for spec in "tiny_a enc16 100 audio_config.encoder_attention_heads=1" \
  "inspect_tiny dec16 60 text_config.num_attention_heads=2,text_config.num_key_value_heads=1"; do
  set -- $spec
  cp -r "$fx/$1" "$tmp/$2"
  "$PY" - "$tmp/$2/config.json" "$4" <<'PY' || { echo "FAIL: re-heading $1"; exit 1; }
import json, sys
path, edits = sys.argv[1], sys.argv[2]
c = json.load(open(path))
for e in edits.split(","):
    key, value = e.split("=")
    section, name = key.split(".")
    c[section][name] = int(value)
json.dump(c, open(path, "w"), indent=1)
PY
  src=$tmp/$2 name=$2 prune_pair
  for mode in bf16-gemm bf16; do
    if ! "$bench" "$tmp/$2-teacher" "$tmp/$2-student" 2 "$3" 8 2 $mode >"$tmp/$2-$mode.json" 2>"$tmp/$2-$mode.err"; then
      cat "$tmp/$2-$mode.err"; echo "FAIL: bench_distill_step $2 $mode"; status=1; continue 2
    fi
  done
  "$PY" - "$2" "$tmp/$2-bf16-gemm.json" "$tmp/$2-bf16.json" <<'PY' || { echo "FAIL: $2 flash against GEMM attention"; status=1; }
import json, sys
name, gemm, flash = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert gemm["attention_flash_calls"] == 0 and gemm["attention_gemm_calls"] > 0, gemm
assert flash["attention_flash_calls"] > 0, f"{name}: AUTO under bf16 GEMMs never took the flash kernels"
for k in ("loss_first", "loss_last"):
    d = abs(flash[k] - gemm[k]) / abs(gemm[k])
    print(f"{name}: {k} {flash[k]:.5f} flash, {gemm[k]:.5f} GEMMs (relative {d:.1e}); "
          f"{flash['attention_flash_calls']} flash calls")
    # both round q, k, v, P and dS to bf16; they differ in summation order only
    assert d < 1e-3, f"{name}: {k} differs by {d:.1e}"
PY
done
exit $status

#!/usr/bin/env bash
# audistill plan on the real Qwen2-Audio-7B config: bf16 must give the published 16,794,189,824
# bytes; quantized and pruned recipes must equal an independent count of the same architecture
# written out below (Python), and bad recipes must be refused.
set -uo pipefail
bin=$AUDISTILL_BIN
cfg=$AUDISTILL_FIXTURES/qwen2_audio_7b/config.json
plans=$AUDISTILL_SOURCE/configs/plans
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/plan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
total_bytes() { "$bin" plan --config "$1" --model-config "$cfg" | awk '$1 == "total" {print $4}'; }

[ "$(total_bytes "$plans/bf16.yaml")" = 16794189824 ] && ok || bad "bf16 total is not the published 16794189824 bytes"

# Independent arithmetic: layer by layer, 4-bit groups of 128 with f16 scale + u8 zero per group.
expected() { # layers ffn vocab linear_bits
  ${PYTHON:-python3} - "$@" <<'PY'
import sys
L, F, V, b = (int(x) for x in sys.argv[1:5])
H, D, EF, EL, M, P = 4096, 1280, 5120, 32, 128, 1500
def q(rows, cols, bits, g=128):
    return rows * cols * bits // 8 + rows * (cols // g) * 3
bf = lambda n: 2 * n
enc_layer = q(D, D, b) * 4 + bf(3 * D) + q(EF, D, b) + bf(EF) + q(D, EF, b) + bf(D) + bf(4 * D)
enc = bf(D * M * 3 + D) + bf(D * D * 3 + D) + bf(P * D) + EL * enc_layer + bf(2 * D)
proj = q(H, D, b) + bf(H)
dec_layer = q(H, H, b) * 4 + bf(3 * H) + q(F, H, b) * 2 + q(H, F, b) + bf(2 * H)
dec = L * dec_layer + bf(H)
emb = q(V, H, 8) * 2
print(enc + proj + dec + emb)
PY
}
[ "$(total_bytes "$plans/int4.yaml")" = "$(expected 32 11008 156032 4)" ] && ok || bad "int4: $(total_bytes "$plans/int4.yaml") vs $(expected 32 11008 156032 4)"
[ "$(total_bytes "$plans/vocab32k-24layers-ffn8192-int4.yaml")" = "$(expected 24 8192 32000 4)" ] && ok || bad "pruned int4"
[ "$(total_bytes "$plans/vocab32k-24layers-ffn8192-int3.yaml")" = "$(expected 24 8192 32000 3)" ] && ok || bad "pruned int3"

refuse() { # yaml text, expected message
  printf '%b' "$1" >"$tmp/r.yaml"
  "$bin" plan --config "$tmp/r.yaml" --model-config "$cfg" >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q "$2" "$tmp/err" && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
}
refuse 'prune:\n  decoder_layers: 40\n' "exceeds the 32 layers"
refuse 'prune:\n  decoder_ffn: 8000\nquantize:\n  decoder_linear: {bits: 4, group_size: 128}\n' "group size 128 does not divide the row width 8000"
refuse 'quantize:\n  decoder_linear: {bits: 5}\n' "5-bit"
refuse 'prune:\n  decoder_layer: 24\n' "unknown key 'decoder_layer' in prune"
refuse 'prune:\n  decoder_layers: 24\n  drop_decoder_layers: [1]\n' "not both"
refuse 'quantize:\n  lm_head: {bits: 4, method: awq}\n' "'awq' is not one of rtn|gptq"
"$bin" plan --help | grep -q "decoder_layers" && ok || bad "--help lists the recipe keys"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]

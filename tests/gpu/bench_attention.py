"""PyTorch's scaled_dot_product_attention on the shape tests/gpu/bench_attention.c times: bf16
q, k, v [B, heads, T, head_dim], forward and backward (autograd, the gradient of the output
given), timed with CUDA events over ITERS calls after a warm-up. Prints one JSON line with the
same FLOP counts as bench_attention.c (causal: the pairs a query sees; backward 2.5x forward).
`decode`: one query row per batch element over SEQ keys (a decoding step), forward only, with
the GB/s of K and V read.

    python3 bench_attention.py BATCH HEADS KV_HEADS SEQ HEAD_DIM causal|bidirectional|decode ITERS
"""
import json
import sys
import time

import torch
import torch.nn.functional as F


def main():
    if len(sys.argv) != 8 or sys.argv[6] not in ("causal", "bidirectional", "decode"):
        sys.exit(__doc__)
    B, H, KVH, T, D = (int(x) for x in sys.argv[1:6])
    decode, iters = sys.argv[6] == "decode", int(sys.argv[7])
    # a decoding step's one query sees every cached key: no mask (SDPA's causal mask would
    # align the query with the first key)
    causal = sys.argv[6] == "causal"
    # the CPU only to check this script where no GPU is (its numbers mean nothing)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=dev).manual_seed(11)
    make = lambda h, t: torch.randn(B, h, t, D, device=dev, dtype=torch.bfloat16, generator=g)
    q = make(H, 1 if decode else T).requires_grad_()
    k, v = make(KVH, T).requires_grad_(), make(KVH, T).requires_grad_()
    extra = {"enable_gqa": True} if KVH != H else {}
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)
    dout = torch.randn_like(out)

    def timed(fn):
        fn()  # warm-up
        if dev.type != "cuda":
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            return 1e3 * (time.perf_counter() - t0) / iters
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters

    with torch.no_grad():
        fwd_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra))
    bwd_ms = 0.0 if decode else timed(
        lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    pairs = B * H * (T if decode else T * (T + 1) / 2 if causal else T * T)
    fwd = 4.0 * pairs * D
    kv_bytes = 2 * 2 * B * KVH * T * D
    print(json.dumps({"impl": "pytorch-sdpa", "batch": B, "heads": H, "kv_heads": KVH, "seq": T,
                      "head_dim": D, "causal": causal or decode, "decode": decode,
                      "forward_ms": round(fwd_ms, 4), "backward_ms": round(bwd_ms, 4),
                      "forward_tflops": round(fwd / (fwd_ms * 1e-3) / 1e12, 2),
                      "backward_tflops": round(2.5 * fwd / (bwd_ms * 1e-3) / 1e12, 2) if bwd_ms else 0.0,
                      "forward_gbs": round(kv_bytes / (fwd_ms * 1e-3) / 1e9, 2),
                      "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()

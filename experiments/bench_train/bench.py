"""One training step (forward, cross-entropy over the supervised target rows, backward,
AdamW) of the same model on the same batch in PyTorch + transformers and in audistill, on this
CPU with two threads each: median milliseconds per step and the ratio.

    python3 experiments/bench_train/bench.py BUILD_DIR   (needs torch + transformers)
"""
import os
import subprocess
import sys
import tempfile
import time

os.environ["OMP_NUM_THREADS"] = "2"
os.environ["OPENBLAS_NUM_THREADS"] = "2"
import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHAPE = dict(audio=dict(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024,
                        num_mel_bins=128, max_source_positions=1500),
             text=dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=8192))
BATCH, CLIP_FRAMES, TARGET, ITERS = 4, 500, 24, 5  # 5 s clips, 24 target tokens each


def main():
    build_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
    exe = os.path.join(build_dir, "bench_train")
    libs = subprocess.check_output(["pkg-config", "--libs", "libcjson", "yaml-0.1", "libpcre2-8", "libutf8proc", "sndfile",
                                    "soxr", "openblas", "hdf5"], text=True).split()
    subprocess.check_call(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-fopenmp",
                           "-I", os.path.join(ROOT, "src"), "-I", "/usr/include/hdf5/serial", os.path.join(HERE, "bench_train.c"),
                           os.path.join(build_dir, "libaudistill_lib.a"), *libs, "-lm", "-o", exe])
    torch.manual_seed(0)
    cfg = Qwen2AudioConfig(audio_config=SHAPE["audio"], text_config=SHAPE["text"], audio_token_index=SHAPE["text"]["vocab_size"] - 1)
    model = Qwen2AudioForConditionalGeneration(cfg).float()
    model.train()
    frames_full = 2 * SHAPE["audio"]["max_source_positions"]
    feats = torch.randn(BATCH, 128, frames_full)
    fmask = torch.zeros(BATCH, frames_full, dtype=torch.long)
    fmask[:, :CLIP_FRAMES] = 1
    n_audio = (((CLIP_FRAMES - 1) // 2 + 1) - 2) // 2 + 1
    prompt = torch.randint(0, 8000, (12,))
    rows = []
    for b in range(BATCH):
        tgt = torch.randint(0, 8000, (TARGET,))
        rows.append(torch.cat([prompt[:2], torch.full((n_audio,), cfg.audio_token_index), prompt[2:], tgt]))
    ids = torch.stack(rows)
    labels = torch.full_like(ids, -100)
    first = ids.shape[1] - TARGET
    labels[:, first - 1:-1] = ids[:, first:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, foreach=False)
    mask = labels != -100

    def step():
        out = model(input_ids=ids, input_features=feats, feature_attention_mask=fmask)
        loss = torch.nn.functional.cross_entropy(out.logits[mask], labels[mask])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)

    step()
    times = []
    for _ in range(ITERS):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    torch_ms = float(np.median(times))
    keep = os.environ.get("BENCH_KEEP_DIR")  # keep the model and batch for profiling
    with tempfile.TemporaryDirectory() as scratch:
        tmp = keep or scratch
        model.save_pretrained(tmp)
        batch = os.path.join(tmp, "batch.safetensors")
        save_file({"input.features": feats[:, :, :CLIP_FRAMES + 2].numpy().copy(),
                   "input.frames": np.full(BATCH, CLIP_FRAMES, np.int32),
                   "input.ids": ids.numpy().astype(np.int32), "input.len": np.full(BATCH, ids.shape[1], np.int32),
                   "input.labels": labels.numpy().astype(np.int32)}, batch)
        ad_ms = float(subprocess.check_output([exe, tmp, batch, str(ITERS), "2"], text=True).strip())
    print(f"params {model.num_parameters()}, batch {BATCH} x ({CLIP_FRAMES} frames, {ids.shape[1]} tokens, {TARGET} supervised)")
    print(f"PyTorch+transformers {torch_ms:.1f} ms/step, audistill {ad_ms:.1f} ms/step, ratio {torch_ms / ad_ms:.2f}")


if __name__ == "__main__":
    main()

"""Same model, same inputs, through transformers and through audistill on this CPU with two
threads each: milliseconds per forward (audio encoder + projector + decoder over the whole
prompt, logits for every position). Prints both and the ratio.

    python3 experiments/bench_forward/bench.py BUILD_DIR   (needs torch + transformers;
                                                           BUILD_DIR has libaudistill_lib.a)

transformers' encoder always runs all 3000 frames (2 * max_source_positions, its input check);
audistill runs only the frames the 10 s clip's outputs depend on.
audistill is timed twice: in the plain environment, and with OPENBLAS_CORETYPE=SkylakeX
OMP_WAIT_POLICY=passive ("tuned"): on this machine OpenBLAS's runtime detection picks its SSE3
(Prescott) kernels, and idle OpenMP threads spin against OpenBLAS's own threads on 2 cores.
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
SHAPES = {
    "small": dict(audio=dict(d_model=256, encoder_layers=2, encoder_attention_heads=4,
                             encoder_ffn_dim=1024, num_mel_bins=128, max_source_positions=1500),
                  text=dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, vocab_size=8192)),
    "medium": dict(audio=dict(d_model=512, encoder_layers=4, encoder_attention_heads=8,
                              encoder_ffn_dim=2048, num_mel_bins=128, max_source_positions=1500),
                   text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                             num_attention_heads=16, num_key_value_heads=4, vocab_size=16384)),
}
CLIP_FRAMES = 1000  # 10 s of audio
ITERS = 5


def build_bench(build_dir):
    exe = os.path.join(build_dir, "bench_forward")
    libs = subprocess.check_output(
        ["pkg-config", "--libs", "libcjson", "yaml-0.1", "libpcre2-8", "libutf8proc", "sndfile",
         "soxr", "openblas", "hdf5"], text=True).split()
    subprocess.check_call(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-fopenmp",
                           "-I", os.path.join(ROOT, "src"), os.path.join(HERE, "bench_forward.c"),
                           os.path.join(build_dir, "libaudistill_lib.a"), *libs, "-lm",
                           "-o", exe])
    return exe


def main():
    build_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
    exe = build_bench(build_dir)
    print(f"{'shape':8} {'params':>10} {'prompt':>7} {'transformers ms':>16} {'audistill ms':>13} "
          f"{'ratio':>6} {'tuned ms':>9} {'ratio':>6}   (ratio = transformers / audistill)")
    for name, spec in SHAPES.items():
        torch.manual_seed(0)
        cfg = Qwen2AudioConfig(audio_config=spec["audio"], text_config=spec["text"],
                               audio_token_index=spec["text"]["vocab_size"] - 1)
        model = Qwen2AudioForConditionalGeneration(cfg).float().eval()
        frames = 2 * spec["audio"]["max_source_positions"]
        feats = torch.randn(1, spec["audio"]["num_mel_bins"], frames)
        fmask = torch.zeros(1, frames, dtype=torch.long)
        fmask[0, :CLIP_FRAMES] = 1
        n_audio = (((CLIP_FRAMES - 1) // 2 + 1) - 2) // 2 + 1
        text = torch.randint(0, spec["text"]["vocab_size"] - 10, (12,))
        ids = torch.cat([text[:2], torch.full((n_audio,), cfg.audio_token_index), text[2:]])[None]
        with torch.no_grad():
            model(input_ids=ids, input_features=feats, feature_attention_mask=fmask)
            times = []
            for _ in range(ITERS):
                t0 = time.perf_counter()
                model(input_ids=ids, input_features=feats, feature_attention_mask=fmask)
                times.append((time.perf_counter() - t0) * 1e3)
        hf_ms = float(np.median(times))
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            inputs = os.path.join(tmp, "inputs.safetensors")
            save_file({"features": feats.numpy(), "frames": np.array([CLIP_FRAMES], np.int32),
                       "input_ids": ids[0].numpy().astype(np.int32)}, inputs)
            cmd = [exe, tmp, inputs, str(ITERS), "2"]
            ad_ms = float(subprocess.check_output(cmd, text=True).strip())
            tuned = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_WAIT_POLICY="passive")
            tuned_ms = float(subprocess.check_output(cmd, text=True, env=tuned).strip())
        print(f"{name:8} {model.num_parameters():>10} {ids.shape[1]:>7} {hf_ms:>16.1f} "
              f"{ad_ms:>13.1f} {hf_ms / ad_ms:>6.2f} {tuned_ms:>9.1f} {hf_ms / tuned_ms:>6.2f}")


if __name__ == "__main__":
    main()

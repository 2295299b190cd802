"""Copies a trained demo teacher into data/teacher as the demo ships it: weights in bf16 (as
Qwen2-Audio-7B itself is stored), config, tokenizer and processor files, and a SHA-256 list.

    python3 experiments/demo_teacher/ship.py out/teacher-scratch/final data/teacher   (torch, safetensors)
"""
import hashlib
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

FILES = ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer_config.json",
         "vocab.json", "merges.txt"]


def main(src, out):
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in FILES:
        shutil.copy(os.path.join(src, name), tmp)
    with open(os.path.join(tmp, "config.json")) as f:
        cfg = json.load(f)
    cfg["torch_dtype"] = "bfloat16"
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(tmp, "model.safetensors"), 0o644)  # safetensors writes 0600
    with open(os.path.join(tmp, "SHA256SUMS"), "w") as f:
        for name in sorted(FILES + ["model.safetensors"]):
            with open(os.path.join(tmp, name), "rb") as g:
                f.write(f"{hashlib.sha256(g.read()).hexdigest()}  {name}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    n = sum(v.numel() for v in tensors.values())
    print(f"{out}: {n} parameters in bf16, {os.path.getsize(os.path.join(out, 'model.safetensors'))} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

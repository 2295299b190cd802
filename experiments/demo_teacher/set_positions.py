"""Writes Whisper's sinusoidal position table into a model's audio encoder
(audio_tower.embed_positions.weight), as the real Whisper encoder has it.

A Qwen2-Audio model built from a config with transformers' standard random initialisation gets
a position table of N(0, 0.02) noise, and training keeps it frozen (as transformers does). The
encoder is then all but blind to time order: its convolutions' outputs are about 50 times
larger than the table, so its attention cannot find the frames near a position and averages
over the clip instead, and every audio token is mostly the same clip-wide vector (the probe in
experiments/demo_teacher/README.md). make_init.py calls this for new models; it also repairs a
model trained with the noise table.

    python3 experiments/demo_teacher/set_positions.py MODEL_DIR OUT_DIR   (numpy, safetensors)
"""
import math
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

NAME = "audio_tower.embed_positions.weight"


def sinusoids(length, channels, max_timescale=10000.0):
    """Whisper's table: sin on the first half of the channels, cos on the second."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1)


def main(src, out):
    if os.path.abspath(src) == os.path.abspath(out):
        sys.exit("set_positions.py: write to a new directory, not over the model")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    if NAME not in tensors:
        sys.exit(f"set_positions.py: {src}/model.safetensors has no {NAME}")
    old = tensors[NAME]
    tensors[NAME] = sinusoids(*old.shape).astype(old.dtype)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in os.listdir(src):
        if name != "model.safetensors" and os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), tmp)
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"{out}: {NAME} {old.shape} set to sinusoids (rms {np.sqrt((old ** 2).mean()):.3f} -> "
          f"{np.sqrt((tensors[NAME] ** 2).mean()):.3f})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

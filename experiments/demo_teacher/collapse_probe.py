"""How much of a model's audio tokens is one clip-wide vector: for the first N clips of a
prepared set, the share of the audio tokens' energy (squared norm) in their mean over the clip.
Near 1, every token says the same thing and the decoder can learn little more than the clip's
length and kind from them (transformers, independent of the C code).

    python3 experiments/demo_teacher/collapse_probe.py PREPARED.h5 MODEL_DIR...
"""
import sys

import h5py
import numpy as np
import torch
from probe_clip import Clips
from transformers import Qwen2AudioForConditionalGeneration


def main(prepared, models, n=8):
    f = h5py.File(prepared, "r")
    for d in models:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
        window = 2 * model.config.audio_config.max_source_positions
        clips = Clips(f, window)
        shares = []
        for i in range(n):
            feats, _, frames, n_tokens = clips[i]
            # the padded frames are masked out of the encoder's attention, as in the model's own
            # forward and in audistill
            conv = (frames - 1) // 2 + 1
            mask = torch.zeros(1, 1, window // 2, window // 2)
            mask[..., conv:] = float("-inf")
            with torch.no_grad():
                h = model.model.audio_tower(feats, attention_mask=mask).last_hidden_state
                tokens = model.model.multi_modal_projector(h)[0]
            tokens = tokens[:n_tokens]  # the clip's own tokens
            shares.append(float(tokens.mean(0).norm() ** 2 / (tokens.norm(dim=1) ** 2).mean()))
        print(f"{d}: share of the audio tokens' energy in the clip mean {np.mean(shares):.3f} "
              f"(clips {min(shares):.3f}-{max(shares):.3f})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])

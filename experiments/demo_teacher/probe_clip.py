"""A prepared clip as transformers' Qwen2-Audio takes it, for the probes in this directory:
log-mel padded to the model's window with the clip's pad value, the feature mask, and the
number of <|AUDIO|> tokens (Qwen2AudioEncoder's formula)."""
import numpy as np
import torch


class Clips:
    def __init__(self, f, window):
        self.f, self.window = f, window
        self.offset, self.valid = f["frame_offset"][:], f["valid_frames"][:]

    def __len__(self):
        return len(self.valid)

    def __getitem__(self, i):
        """(features [1, n_mels, window], feature mask [1, window], frames, audio tokens)"""
        f, w = self.f, self.window
        frames = min(int(self.valid[i]), w)
        x = np.full((w, f["features"].shape[1]), f["pad_value"][i], np.float32)
        stored = f["features"][self.offset[i]:self.offset[i + 1]][:w]
        x[:len(stored)] = stored
        mask = torch.zeros(1, w, dtype=torch.long)
        mask[0, :frames] = 1
        tokens = ((frames - 1) // 2 + 1 - 2) // 2 + 1
        return torch.from_numpy(np.ascontiguousarray(x.T[None])), mask, frames, tokens

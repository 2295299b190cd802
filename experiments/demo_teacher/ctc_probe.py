"""What the model's states at the audio positions spell: greedy CTC decoding (argmax per audio
position through lm_head, repeats merged, the <|AUDIO|> blank dropped) of the first N clips of a
prepared set, against their English transcripts, with the token error rate. Independent of the
C code: transformers runs the model.

    python3 experiments/demo_teacher/ctc_probe.py MODEL_DIR PREPARED.h5 [N] [TOKENIZER_DIR]
"""
import sys

import h5py
import torch
from probe_clip import Clips
from transformers import AutoTokenizer, Qwen2AudioForConditionalGeneration


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def main(model_dir, prepared, n=12, tok_dir=None):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tok_dir or model_dir)
    cfg = model.config
    blank, window = cfg.audio_token_index, 2 * cfg.audio_config.max_source_positions
    f = h5py.File(prepared, "r")
    clips = Clips(f, window)
    en_off, en_tok = f["ids/en/offset"][:], f["ids/en/tokens"][:]
    before, after = list(f["prompt/de/before_audio"][:]), list(f["prompt/de/after_audio"][:])
    errors = total = 0
    for i in range(n):
        feats, mask, _, tokens = clips[i]
        ids = torch.tensor([before + [blank] * tokens + after])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                        input_features=feats, feature_attention_mask=mask)
        best = out.logits[0, len(before):len(before) + tokens].argmax(-1).tolist()
        hyp = [t for k, t in enumerate(best) if t != blank and (k == 0 or t != best[k - 1])]
        ref = list(en_tok[en_off[i]:en_off[i + 1] - 1])  # without the end token
        errors += edit_distance(hyp, ref)
        total += len(ref)
        print(f"{i:3d} ref: {tok.decode(ref)!r}\n    hyp: {tok.decode(hyp)!r}")
    print(f"token error rate {100.0 * errors / max(total, 1):.1f}% over {n} clips ({total} tokens)")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 12,
         sys.argv[4] if len(sys.argv) > 4 else None)

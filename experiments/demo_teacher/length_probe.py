"""Does a model read what is said, or only how long the clip is? Greedy German translations
of the first N clips of a prepared set (transformers, independent of the C code), grouped by
their number of audio tokens: a model that reads the audio gets the clips of one length right
one by one; a model that reads only the length gives them all the same translation.

    python3 experiments/demo_teacher/length_probe.py MODEL_DIR PREPARED.h5 [N] [TOKENIZER_DIR]
"""
import collections
import sys

import h5py
import torch
from probe_clip import Clips
from transformers import AutoTokenizer, Qwen2AudioForConditionalGeneration


def main(model_dir, prepared, n=64, tok_dir=None):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tok_dir or model_dir)
    cfg = model.config
    audio, window = cfg.audio_token_index, 2 * cfg.audio_config.max_source_positions
    stop = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
               else [model.generation_config.eos_token_id])
    f = h5py.File(prepared, "r")
    clips = Clips(f, window)
    de_off, de_tok = f["ids/de/offset"][:], f["ids/de/tokens"][:]
    before, after = list(f["prompt/de/before_audio"][:]), list(f["prompt/de/after_audio"][:])
    groups = collections.defaultdict(list)
    exact = 0
    n = min(n, len(clips))
    for i in range(n):
        feats, mask, _, tokens = clips[i]
        ids = before + [audio] * tokens + after
        out = []
        with torch.no_grad():
            for _ in range(40):
                t = torch.tensor([ids + out])
                logits = model(input_ids=t, attention_mask=torch.ones_like(t), input_features=feats,
                               feature_attention_mask=mask).logits[0, -1]
                nxt = int(logits.argmax())
                if nxt in stop:
                    break
                out.append(nxt)
        ref = list(de_tok[de_off[i]:de_off[i + 1] - 1])
        exact += out == ref
        groups[tokens].append((tok.decode(out), tok.decode(ref)))
    shared = [g for g in groups.values() if len(g) > 1]
    clips = sum(len(g) for g in shared)
    distinct = sum(len({h for h, _ in g}) for g in shared)
    right = sum(h == r for g in shared for h, r in g)
    print(f"{model_dir}: exact translations {exact}/{n}; clips sharing their length with "
          f"another: {clips} in {len(shared)} groups, {distinct} distinct translations among them, {right} exact")
    for g in shared[:3]:
        for h, r in g:
            print(f"   hyp {h!r:45} ref {r!r}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 64,
         sys.argv[4] if len(sys.argv) > 4 else None)

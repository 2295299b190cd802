"""Writes an evaluation set of the synthetic eval split's sentences that none of the given
training splits contains, for `evaluate.list` / `evaluate.references` in a job file.

A teacher trained on corpora of several seeds, one of them made before sentence splits followed
from the text (commit f84a379), may have seen some eval sentences of a newer corpus; scoring
only the rest gives its held-out figure.

    python3 experiments/demo_teacher/heldout.py EVAL_SPLIT OUT_DIR TRAIN_SPLIT [TRAIN_SPLIT ...]

EVAL_SPLIT and TRAIN_SPLIT are `audistill synth` split directories (DIR/eval, DIR/train).
Writes OUT_DIR/list.txt (absolute wav paths), OUT_DIR/ref.de, OUT_DIR/ref.zh.
"""
import os
import sys


def lines(split, lang):
    name = os.path.basename(os.path.normpath(split))
    path = os.path.join(split, "text", "txt", f"ACL.6060.{name}.en-xx.{lang}.txt")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def main(eval_split, out, trains):
    seen = set()
    for t in trains:
        seen.update(lines(t, "en"))
    en, de, zh = (lines(eval_split, lang) for lang in ("en", "de", "zh"))
    if not (len(en) == len(de) == len(zh)):
        sys.exit(f"{eval_split}: en/de/zh have {len(en)}/{len(de)}/{len(zh)} lines")
    keep = [i for i, s in enumerate(en) if s not in seen]
    tmp = out.rstrip("/") + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    wav = lambda i: os.path.abspath(os.path.join(eval_split, "segmented_wavs", "gold", f"sent_{i + 1}.wav"))
    for i in keep:
        if not os.path.exists(wav(i)):
            sys.exit(f"{wav(i)} does not exist")
    for name, rows in (("list.txt", [wav(i) for i in keep]), ("ref.de", [de[i] for i in keep]),
                       ("ref.zh", [zh[i] for i in keep])):
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            f.write("".join(r + "\n" for r in rows))
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    os.rename(tmp, out)
    print(f"{out}: {len(keep)} of {len(en)} eval sentences are in none of {len(trains)} training splits")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

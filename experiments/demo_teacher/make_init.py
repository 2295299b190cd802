"""The demo teacher's starting point: a Qwen2-Audio-architecture model with small widths and
standard random initialisation except the audio encoder's position table, which gets Whisper's
sinusoids (set_positions.py says why), and a byte-level BPE vocabulary learned from the synthetic
corpus (same vocab.json/merges.txt/tokenizer_config.json format and the six Qwen2-Audio
special tokens), saved as a Hugging Face directory that `audistill train` then trains (CE).

    python3 experiments/demo_teacher/make_init.py SYNTH_DIR OUT_DIR   (torch, transformers)
"""
import glob
import json
import os
import sys

import torch
from set_positions import sinusoids
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
            "<|audio_eos|>"]
PROMPTS = ["Translate the English speech into German:", "Translate the English speech into Chinese:",
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
           "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n", "<|im_end|>\n<|im_start|>assistant\n"]
N_REGULAR = 2042
VOCAB = N_REGULAR + len(SPECIALS)
AUDIO = dict(d_model=128, encoder_layers=3, encoder_attention_heads=4, encoder_ffn_dim=512,
             num_mel_bins=80, max_source_positions=400)  # an 8 s window
TEXT = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, rope_theta=10000.0)


def main(synth, out):
    os.makedirs(out, exist_ok=True)
    lines = []
    for path in sorted(glob.glob(os.path.join(synth, "train", "text", "txt", "*.txt"))):
        with open(path, encoding="utf-8") as f:
            lines += [l.rstrip("\n") for l in f]
    lines += PROMPTS * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=N_REGULAR, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab, merges = model["vocab"], model["merges"]
    n_regular = len(vocab)  # a small corpus may yield fewer merges than asked for
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m) for m in merges) + "\n")
    sid = {s: n_regular + i for i, s in enumerate(SPECIALS)}
    added = {str(i): dict(content=s, lstrip=False, normalized=False, rstrip=False, single_word=False,
                          special=True) for s, i in sid.items()}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(dict(added_tokens_decoder=added, tokenizer_class="Qwen2Tokenizer",
                       eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None,
                       bos_token=None, model_max_length=32768, clean_up_tokenization_spaces=False,
                       errors="replace", split_special_tokens=False), f, indent=1)
    torch.manual_seed(20261126)
    cfg = Qwen2AudioConfig(
        audio_config=AUDIO,
        text_config=dict(TEXT, vocab_size=n_regular + len(SPECIALS), rms_norm_eps=1e-6,
                         bos_token_id=sid["<|endoftext|>"], eos_token_id=sid["<|im_end|>"],
                         pad_token_id=sid["<|endoftext|>"], max_position_embeddings=4096,
                         tie_word_embeddings=False),
        audio_token_index=sid["<|AUDIO|>"])
    model = Qwen2AudioForConditionalGeneration(cfg).float()
    table = model.get_parameter("model.audio_tower.embed_positions.weight")
    with torch.no_grad():
        table.copy_(torch.from_numpy(sinusoids(*table.shape)).float())
    model.generation_config.pad_token_id = sid["<|endoftext|>"]
    model.generation_config.eos_token_id = [sid["<|im_end|>"], sid["<|endoftext|>"]]
    model.save_pretrained(out)
    fe = WhisperFeatureExtractor(feature_size=AUDIO["num_mel_bins"], sampling_rate=16000, hop_length=160,
                                 chunk_length=2 * AUDIO["max_source_positions"] // 100, n_fft=400,
                                 return_attention_mask=True)
    fe.save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters())} parameters, vocabulary {n_regular} + 6")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

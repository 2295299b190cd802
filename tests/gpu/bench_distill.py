"""PyTorch + transformers side of the distillation-step benchmark in tests/gpu/check.sh.

Builds a random-initialised Qwen2-Audio teacher and student at the real model's widths
(tests/fixtures/qwen2_audio_7b/config.json) with fewer layers, saves both (bf16 safetensors)
for bench_distill_step (the audistill side), and times the same step in PyTorch: teacher
forward in bf16 under no_grad, student with fp32 master weights under bf16 autocast (SDPA
attention), alpha*T^2*KL(teacher||student) + (1-alpha)*CE over the target positions, backward,
global-norm clipping at 1.0, fused AdamW;
audio encoder and token embeddings frozen in the student,
    as on the audistill side. The student keeps the teacher's audio encoder, as a student pruned
from the teacher does, so both sides run that frozen encoder once per step and hand its output
to both models (audistill's distill.share_encoder; here the teacher's audio_tower output is
reused by the student's); --separate-encoders gives the student its own random encoder and both
sides run two. Prints one JSON line with the model FLOPs of one step (the same count is used for
both sides' MFU) and of one encoder forward.

transformers' encoder always runs the 30 s window (3000 mel frames) while audistill runs only
the frames a clip has; the FLOP count credits both with the useful frames only.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

here = os.path.dirname(os.path.abspath(__file__))


def make_config(enc_layers, dec_layers, small):
    with open(os.path.join(here, "..", "fixtures", "qwen2_audio_7b", "config.json")) as f:
        d = json.load(f)
    d["audio_config"]["encoder_layers"] = enc_layers
    d["text_config"]["num_hidden_layers"] = dec_layers
    if small:  # a CPU smoke test of this script
        d["audio_config"].update(d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128)
        d["text_config"].update(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                                intermediate_size=128, vocab_size=4096)
        d["audio_token_index"] = 4095
    return Qwen2AudioConfig(**d)


def checkpoint_name(name):
    """transformers-5 module names -> the checkpoint names audistill (and Qwen2-Audio's files) use."""
    for a, b in (("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                 ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")):
        if name.startswith(a):
            return b + name[len(a):]
    return name


def save_checkpoint(model, path):
    """config.json + one safetensors file with checkpoint names (independent of how a given
    transformers version names tensors in save_pretrained)."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    tensors = {checkpoint_name(k): v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(path, "model.safetensors"))


def step_flops(cfg, enc_layers, dec_layers_t, dec_layers_s, batch, frames, seq, supervised,
               shared_encoder):
    a, t = cfg.audio_config, cfg.text_config
    d, ff, H, I, V = a.d_model, a.encoder_ffn_dim, t.hidden_size, t.intermediate_size, t.vocab_size
    kv = t.num_key_value_heads * (H // t.num_attention_heads)
    enc_tok = batch * (frames // 2)
    enc_layer = 4 * d * d + 2 * d * ff
    enc = 2 * enc_layer * enc_tok * enc_layers + 4 * (frames // 2) ** 2 * d * batch * enc_layers
    dec_layer = 2 * H * H + 2 * H * kv + 3 * H * I
    dec_fwd = lambda L: 2 * dec_layer * batch * seq * L + 4 * seq * seq * H * batch * L
    head = 2 * H * V * supervised + 2 * d * H * batch * (frames // 4)
    teacher = enc + dec_fwd(dec_layers_t) + head
    student = (0 if shared_encoder else enc) + 3 * dec_fwd(dec_layers_s) + 3 * head
    return teacher + student, enc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder-layers", type=int, default=4)
    p.add_argument("--teacher-layers", type=int, default=8)
    p.add_argument("--student-layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--targets", type=int, default=40)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--save", help="write teacher/ and student/ here for bench_distill_step")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny widths (CPU smoke test)")
    p.add_argument("--separate-encoders", action="store_true",
                   help="the student gets its own random audio encoder (each model runs its own)")
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    cfg_t = make_config(args.encoder_layers, args.teacher_layers, args.small)
    cfg_s = make_config(args.encoder_layers, args.student_layers, args.small)
    before, after = 10, 5
    audio = ((args.frames - 1) // 2 + 1 - 2) // 2 + 1
    seq = before + audio + after + args.targets
    supervised = args.batch * args.targets
    shared = not args.separate_encoders
    flops, encoder_flops = step_flops(cfg_t, args.encoder_layers, args.teacher_layers,
                                      args.student_layers, args.batch, args.frames, seq,
                                      supervised, shared)

    t0 = time.time()
    with dev:  # initialise on the device: seconds instead of minutes for billions of weights
        teacher = Qwen2AudioForConditionalGeneration._from_config(cfg_t, attn_implementation="sdpa",
                                                                  dtype=torch.bfloat16)
        student = Qwen2AudioForConditionalGeneration._from_config(cfg_s, attn_implementation="sdpa",
                                                                  dtype=torch.bfloat16)
    if shared:
        student.model.audio_tower.load_state_dict(teacher.model.audio_tower.state_dict())
    if args.save:
        save_checkpoint(teacher, os.path.join(args.save, "teacher"))
        save_checkpoint(student, os.path.join(args.save, "student"))
        print(f"built and saved both models in {time.time() - t0:.1f} s", file=sys.stderr)
    teacher.to(dev).eval()
    student.float().to(dev).train()
    student.model.audio_tower.requires_grad_(False)
    student.get_input_embeddings().requires_grad_(False)
    params = [q for q in student.parameters() if q.requires_grad]
    trainable = sum(q.numel() for q in params)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=args.device == "cuda")

    g = torch.Generator().manual_seed(7)
    n_mels = cfg_t.audio_config.num_mel_bins
    feats = torch.randn(args.batch, n_mels, 3000, generator=g) * 0.5
    fmask = torch.zeros(args.batch, 3000, dtype=torch.long)
    fmask[:, :args.frames] = 1
    ids = torch.randint(100, min(100000, cfg_t.text_config.vocab_size - 1), (args.batch, seq), generator=g)
    ids[:, before:before + audio] = cfg_t.audio_token_index
    labels = torch.full((args.batch, seq), -100, dtype=torch.long)
    first = before + audio + after
    labels[:, first - 1:seq - 1] = ids[:, first:seq]
    feats, fmask, ids, labels = feats.to(dev), fmask.to(dev), ids.to(dev), labels.to(dev)
    attn = torch.ones_like(ids)
    mask = labels != -100
    alpha, T = 0.5, 2.0
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    if shared:  # the student's frozen encoder is the teacher's: take the teacher's output
        encoded = {}
        teacher_tower = teacher.model.audio_tower.forward

        def teacher_encoder(*a, **k):
            encoded["out"] = teacher_tower(*a, **k)
            return encoded["out"]

        teacher.model.audio_tower.forward = teacher_encoder
        student.model.audio_tower.forward = lambda *a, **k: encoded.pop("out")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            tl = teacher(input_ids=ids, attention_mask=attn, input_features=feats.bfloat16(),
                         feature_attention_mask=fmask).logits[mask].float()
        with autocast:
            sl = student(input_ids=ids, attention_mask=attn, input_features=feats,
                         feature_attention_mask=fmask).logits[mask].float()
        kl = F.kl_div(F.log_softmax(sl / T, -1), F.log_softmax(tl / T, -1), log_target=True,
                      reduction="sum")
        ce = F.cross_entropy(sl, labels[mask], reduction="sum")
        loss = (alpha * T * T * kl + (1 - alpha) * ce) / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for it in range(args.steps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        s0 = time.perf_counter()
        losses.append(step())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if it >= 2:
            times.append(1e3 * (time.perf_counter() - s0))
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0
    print(json.dumps({"impl": "pytorch", "ms_per_step": round(med, 2), "ms_min": round(min(times), 2),
                      "tokens": args.batch * seq, "tokens_per_s": round(1e3 * args.batch * seq / med, 1),
                      "supervised": supervised, "trainable": trainable, "peak_bytes": peak,
                      "flops_per_step": flops, "encoder_flops": encoder_flops,
                      "shared_encoder": shared, "loss_first": losses[0], "loss_last": losses[-1],
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()

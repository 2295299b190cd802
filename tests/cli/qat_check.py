"""Independent checks of a quantization-aware training run (numpy + safetensors only).

    qat_check.py dequantize MODEL_DIR OUT_DIR
        writes OUT_DIR/model.safetensors: every group-quantized weight of MODEL_DIR expanded
        to float32 (scale * (code - zero)), every other tensor as float32.
    qat_check.py same PTQ_DIR QAT_DIR
        the two compact models hold identical tensors (codes, scales, zeros, bf16 weights).
    qat_check.py same-scales PTQ_DIR QAT_DIR
        the two hold identical group scales and zero points (a run with fixed scales).
    qat_check.py exported CHECKPOINT_DIR PTQ_DIR FINAL_DIR
        fake-quantizes the checkpoint's f32 masters with its learned scales (or PTQ_DIR's when
        the run kept them) and PTQ_DIR's zero points, exactly as the format defines codes
        (round half away from zero, clamp), and requires FINAL_DIR's codes to dequantize to
        those values bit for bit; prints how many codes moved away from PTQ_DIR's.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def unpack(codes, bits, cols):
    b = codes.astype(np.uint32)
    if bits == 8:
        return b
    if bits == 4:
        return np.stack([b & 15, b >> 4], -1).reshape(b.shape[0], cols)
    if bits == 2:
        return np.stack([(b >> (2 * k)) & 3 for k in range(4)], -1).reshape(b.shape[0], cols)
    w = b.reshape(b.shape[0], -1, 3)
    word = w[..., 0] | (w[..., 1] << 8) | (w[..., 2] << 16)
    return np.stack([(word >> (3 * k)) & 7 for k in range(8)], -1).reshape(b.shape[0], cols)


def parts(t, name, spec):
    rows, cols = spec["shape"]
    G, bits = spec["group_size"], spec["bits"]
    codes = unpack(t[name + ".qcodes"], bits, cols).astype(np.int64)
    scale = t[name + ".qscales"].astype(np.float32)
    zero = (t[name + ".qzeros"].astype(np.int64) if not spec["symmetric"]
            else np.full(scale.shape, 2 ** (bits - 1), np.int64))
    return codes, scale, zero, G


def dequantize(t, name, spec):
    codes, scale, zero, G = parts(t, name, spec)
    return (np.repeat(scale, G, 1) * (codes - np.repeat(zero, G, 1)).astype(np.float32)).astype(np.float32)


def load_all(model_dir):
    path = model_dir + "/model.safetensors"
    # bf16 is not a numpy dtype: read those tensors through their raw bytes
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I32": np.int32}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[a:b]
        if v["dtype"] == "BF16":
            u = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            out[k] = u.view(np.float32).reshape(v["shape"])
        else:
            out[k] = np.frombuffer(raw, dt[v["dtype"]]).reshape(v["shape"])
    return out, header.get("__metadata__", {})


def main():
    cmd = sys.argv[1]
    if cmd == "dequantize":
        src, dst = sys.argv[2], sys.argv[3]
        t, meta = load_all(src)
        index = json.loads(meta.get("audistill.quantization", '{"tensors": {}}'))["tensors"]
        out = {}
        for name, spec in index.items():
            out[name] = dequantize(t, name, spec)
        for k, v in t.items():
            if not any(k.startswith(n + ".q") for n in index):
                out[k] = v.astype(np.float32)
        save_file(out, dst + "/model.safetensors", metadata={"format": "pt"})
        return
    if cmd == "same":
        a, _ = load_all(sys.argv[2])
        b, _ = load_all(sys.argv[3])
        assert a.keys() == b.keys(), set(a) ^ set(b)
        bad = [k for k in a if a[k].tobytes() != b[k].tobytes()]
        assert not bad, f"tensors differ: {bad[:5]}"
        print(f"{len(a)} tensors identical")
        return
    if cmd == "same-scales":
        a, _ = load_all(sys.argv[2])
        b, _ = load_all(sys.argv[3])
        scales = [k for k in a if k.endswith(".qscales") or k.endswith(".qzeros")]
        assert scales, "no quantized tensors"
        bad = [k for k in scales if a[k].tobytes() != b.get(k, np.zeros(0)).tobytes()]
        assert not bad, f"scales differ: {bad[:5]}"
        print(f"{len(scales)} scale/zero tensors identical")
        return
    if cmd == "exported":
        ckpt, ptq, final = sys.argv[2:5]
        masters = load_file(ckpt + "/model.safetensors")
        opt = load_file(ckpt + "/optimizer.safetensors")
        p, pmeta = load_all(ptq)
        f, fmeta = load_all(final)
        index = json.loads(fmeta["audistill.quantization"])["tensors"]
        assert index.keys() == json.loads(pmeta["audistill.quantization"])["tensors"].keys()
        moved = total = 0
        for name, spec in index.items():
            assert spec["method"] == "qat", (name, spec)
            bits, G = spec["bits"], spec["group_size"]
            maxq, lo = 2 ** bits - 1, (1 if spec["symmetric"] else 0)
            pcodes, pscale, zero, _ = parts(p, name, spec)
            scale = opt.get(name + ".qat_scale")
            scale = pscale if scale is None else scale.reshape(pscale.shape)
            s16 = scale.astype(np.float16).astype(np.float32)
            s = np.repeat(s16, G, 1)
            z = np.repeat(zero, G, 1)
            t = (masters[name].astype(np.float32) / s).astype(np.float64)
            code = np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5) + z, lo, maxq).astype(np.int64)
            want = (s * (code - z).astype(np.float32)).astype(np.float32)
            got = dequantize(f, name, spec)
            diff = np.abs(got - want).max()
            assert diff == 0, f"{name}: exported weight differs from the fake-quantized master by {diff}"
            moved += int((parts(f, name, spec)[0] != pcodes).sum())
            total += pcodes.size
        for k, v in f.items():
            if k in masters:  # kept weights: the bf16 of the master
                m = masters[k].astype(np.float32)
                bf = ((m.view(np.uint32) + 0x7FFF + ((m.view(np.uint32) >> 16) & 1)) >> 16 << 16).view(np.float32)
                assert np.array_equal(v, bf.reshape(v.shape)), f"{k}: not the bf16 of the master"
        print(f"exact; {moved} of {total} codes moved")
        return
    raise SystemExit(f"unknown command {cmd}")


main()

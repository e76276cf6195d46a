#!/usr/bin/python3
"""The PyTorch eager peer of `prompting bench`: the same training step and inference pass, written
the way the official implementations write them, timed the same way.

    peer.py measure --method l2p --checkpoint vit.safetensors --output result.json [options]
    peer.py peak --threads 2 --output peak.json          # best float32 matmul GFLOP/s
    peer.py create --arch vit-base --output vit.safetensors   # random timm-named weights

What "the same computation" means here (see bench/README.md):
* a frozen timm ViT whose attention is timm's explicit ``(q @ k^T) * scale -> softmax -> @ v``
  (the official L2P, DualPrompt, CODA-Prompt and VQ-Prompt code all run such a timm ViT);
  prefixes are concatenated to the keys and values after the qkv projection, per head;
* the query pass under ``torch.no_grad()`` through the same, un-prompted backbone: all its
  blocks, or the first K with ``--query-depth K``; the blocks before the first prompted one, up to
  that depth, are computed once for both passes as the framework does (none for the methods here,
  which all prompt block 0);
* the prompted forward, the head, cross-entropy with logits outside the trained classes set to
  -inf, plus the method's pull / orthogonality / VQ losses;
* ``zero_grad``, ``backward``, optional gradient clipping and an optimiser step (the optimiser,
  learning rates and clipping are the recipe the framework uses, passed by the bench);
* prompts, keys and head trainable, every backbone parameter ``requires_grad = False`` (unless
  the baseline trains part of it).

The module and parameter names follow timm, so the bench's safetensors file loads directly.
Only the standard library and torch are needed (Debian's python3-torch 1.13 has no safetensors).
"""

import argparse
import json
import math
import os
import struct
import sys
import time
import warnings


def early_threads(argv):
    """Thread variables must be set before torch is imported (OpenMP and BLAS read them once)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(var, argv[i + 1])


early_threads(sys.argv)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

LIBRARY = "PyTorch " + torch.__version__
# frombuffer over the file's bytes warns that they are read-only; every tensor is cloned at once.
warnings.filterwarnings("ignore", message="The given buffer is not writable")
LN_EPS = 1e-6


# --------------------------------------------------------------------------
# safetensors without the safetensors package
# --------------------------------------------------------------------------
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    """{name: float32 tensor} and the metadata of a safetensors file (json + struct + frombuffer)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise SystemExit(f"error: {path}: tensor {name} has unsupported dtype {info['dtype']}")
        if end == begin:
            t = torch.zeros(info["shape"], dtype=dtype)
        else:
            t = torch.frombuffer(body[begin:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = t.float().clone()
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# timm's VisionTransformer (the parts the methods use), explicit attention
# --------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, prefix=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if prefix is not None:
            pk, pv = prefix
            pk = pk.reshape(B, -1, self.heads, C // self.heads).permute(0, 2, 1, 3)
            pv = pv.reshape(B, -1, self.heads, C // self.heads).permute(0, 2, 1, 3)
            k = torch.cat((pk, k), dim=2)
            v = torch.cat((pv, v), dim=2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x, prefix=None, adapter=None):
        x = x + self.attn(self.norm1(x), prefix)
        m = self.mlp(self.norm2(x))
        if adapter is not None:
            m = m + adapter(m)
        return x + m


class ViT(nn.Module):
    def __init__(self, image, patch, dim, depth, heads, hidden, channels=3):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image // patch) ** 2, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dim, self.depth, self.patch = dim, depth, patch

    def patches(self, x):
        return self.patch_embed.proj(x).flatten(2).transpose(1, 2)

    def embed(self, x):
        x = self.patches(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self.pos_embed

    def forward_features(self, x):
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def resample_pos_embed(pos, grid):
    old = int(round(math.sqrt(pos.shape[1] - 1)))
    if old == grid:
        return pos
    cls, rest = pos[:, :1], pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    rest = F.interpolate(rest, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
    return torch.cat((cls, rest.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)), dim=1)


def load_vit(path, heads, image_size):
    sd, _ = read_safetensors(path)
    dim, channels, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    model = ViT(image_size, patch, dim, depth, heads, hidden, channels)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.") and not k.startswith("pre_logits.")}
    sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], image_size // patch)
    model.load_state_dict(sd)
    del sd
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------------------
# The methods, each as the code base that defines it computes it
# --------------------------------------------------------------------------
def uniform(shape, low, high):
    return nn.Parameter(torch.empty(shape).uniform_(low, high))


def l2_normalize(x, dim=None, epsilon=1e-12):
    """l2-pytorch's rsqrt normalisation."""
    square_sum = torch.sum(x ** 2, dim=dim, keepdim=True)
    x_inv_norm = torch.rsqrt(torch.maximum(square_sum, torch.tensor(epsilon, device=x.device)))
    return x * x_inv_norm


class Method(nn.Module):
    """features(vit, x, q, train) -> (pre-logits (B, D), auxiliary loss or 0). first_layer: the first
    block the method's prompts touch (the blocks before it are the un-prompted backbone's)."""
    needs_query = False
    first_layer = 0


class Plain(Method):
    """linear / full / partial / bias / mlp / adapter: the backbone's own forward."""

    def __init__(self, vit, adapter_reduction=None):
        super().__init__()
        self.adapters = None
        if adapter_reduction:
            b = max(1, vit.dim // adapter_reduction)
            self.adapters = nn.ModuleList()
            for _ in range(vit.depth):
                down, up = nn.Linear(vit.dim, b), nn.Linear(b, vit.dim)
                nn.init.zeros_(up.weight)
                nn.init.zeros_(up.bias)
                self.adapters.append(nn.Sequential(down, nn.ReLU(), up))

    def features(self, vit, x, q, train):
        x = vit.embed(x)
        for i, blk in enumerate(vit.blocks):
            x = blk(x, adapter=None if self.adapters is None else self.adapters[i])
        return vit.norm(x)[:, 0], 0.0


class Vpt(Method):
    """KMnP/vpt: incorporate_prompt ([CLS, P, patches]) and forward_deep_prompt; VPT-deep-pool
    picks each layer's prompt from a keyed pool (top-1, one key set) instead."""

    def __init__(self, vit, deep, length=10, dropout=0.0, pool=None, pull_weight=0.1):
        super().__init__()
        val = math.sqrt(6.0 / float(3 * vit.patch * vit.patch + vit.dim))
        layers = vit.depth if deep else 1
        self.length, self.deep, self.pool, self.pull_weight = length, deep, pool, pull_weight
        self.prompt_dropout = nn.Dropout(dropout)
        if pool is None:
            self.prompt_embeddings = uniform((layers, length, vit.dim), -val, val)
        else:
            self.needs_query = True
            self.prompt_embeddings = uniform((layers, pool, length, vit.dim), -val, val)
            self.prompt_key = uniform((pool, vit.dim), -val, val)

    def layer_prompt(self, i, B, ids):
        if self.pool is None:
            return self.prompt_dropout(self.prompt_embeddings[i].expand(B, -1, -1))
        return self.prompt_dropout(self.prompt_embeddings[i][ids])

    def features(self, vit, x, q, train):
        B = x.shape[0]
        aux, ids = 0.0, None
        if self.pool is not None:
            cos = F.normalize(q, dim=1) @ F.normalize(self.prompt_key, dim=1).t()
            ids = cos.topk(1, dim=1).indices[:, 0]
            if train:
                aux = -cos.gather(1, ids[:, None]).sum() / B * self.pull_weight
        h = vit.embed(x)
        h = torch.cat((h[:, :1, :], self.layer_prompt(0, B, ids), h[:, 1:, :]), dim=1)
        for i, blk in enumerate(vit.blocks):
            if self.deep and i > 0:
                h = torch.cat((h[:, :1, :], self.layer_prompt(i, B, ids), h[:, (1 + self.length):, :]), dim=1)
            h = blk(h)
        return vit.norm(h)[:, 0], aux


class L2P(Method):
    """JH-LEE-KR/l2p-pytorch: Prompt (pool 10, length 5, top-5, embedding_key 'cls'), prompts
    before the patch tokens with CLS in front and CLS's position embedding repeated for them
    (resize_pos_embed), head on the mean of the prompt outputs, loss CE - 0.1 * reduce_sim.
    jax=True: the original layout [P, CLS, patches] without position embedding on the prompts."""
    needs_query = True

    def __init__(self, vit, pool=10, length=5, top_k=5, pull=0.1, jax=False):
        super().__init__()
        self.pool, self.length, self.top_k, self.pull, self.jax = pool, length, top_k, pull, jax
        self.prompt = uniform((pool, length, vit.dim), -1.0, 1.0)
        self.prompt_key = uniform((pool, vit.dim), -1.0, 1.0)
        if not jax:
            pos = vit.pos_embed.detach()
            ext = torch.cat((pos[:, :1].expand(-1, 1 + top_k * length, -1), pos[:, 1:]), dim=1)
            self.register_buffer("pos_embed", ext)

    def features(self, vit, x, q, train):
        B = x.shape[0]
        x_embed = vit.patches(x)
        prompt_norm = l2_normalize(self.prompt_key, dim=1)
        x_embed_norm = l2_normalize(q, dim=1)
        similarity = torch.matmul(x_embed_norm, prompt_norm.t())
        _, idx = torch.topk(similarity, k=self.top_k, dim=1)
        batched_prompt_raw = self.prompt[idx]
        batch_size, top_k, length, c = batched_prompt_raw.shape
        batched_prompt = batched_prompt_raw.reshape(batch_size, top_k * length, c)
        batched_key_norm = prompt_norm[idx]
        reduce_sim = torch.sum(batched_key_norm * x_embed_norm.unsqueeze(1)) / B
        n = self.top_k * self.length
        if self.jax:
            h = torch.cat((vit.cls_token.expand(B, -1, -1), x_embed), dim=1) + vit.pos_embed
            h = torch.cat((batched_prompt, h), dim=1)
            start = 0
        else:
            h = torch.cat((batched_prompt, x_embed), dim=1)
            h = torch.cat((vit.cls_token.expand(B, -1, -1), h), dim=1) + self.pos_embed
            start = 1
        for blk in vit.blocks:
            h = blk(h)
        h = vit.norm(h)
        return h[:, start:start + n].mean(dim=1), (-self.pull * reduce_sim if train else 0.0)


class CodaHarness(Method):
    """GT-RIPL/CODA-Prompt models/vit.py: a per-layer prompt callback returning [Ek, Ev] prefixes
    and a loss, summed over layers (prompt_loss.sum())."""
    needs_query = True

    def features(self, vit, x, q, train, start=None):
        """start: (tokens after the first s blocks, s), when the query pass computed them."""
        h, first = start if start is not None else (vit.embed(x), 0)
        B = x.shape[0]
        self.begin(q, B, train)
        total = 0.0
        for i in range(first, vit.depth):
            prefix, loss = self.layer(i, q, B, train)
            total = total + loss
            h = vit.blocks[i](h, prefix)
        return vit.norm(h)[:, 0], total

    def begin(self, q, B, train):
        pass


class DualPromptCoda(CodaHarness):
    """zoo.py DualPrompt (and its L2P subclass, L2P++): G prompt at g_layers split in halves,
    E pool at e_layers with keys (per layer or shared), top-k cosine, the true task while
    training when bootstrapped; pull (1 - cos).sum() over each sample's own keys."""

    def __init__(self, vit, task, g_layers, g_len, e_layers, e_len, pool, top_k, bootstrap, keys_per_layer,
                 pull_weight=1.0, init=(0.0, 1.0)):
        super().__init__()
        self.task, self.g_layers, self.g_len, self.e_layers, self.e_len = task, g_layers, g_len, e_layers, e_len
        self.top_k, self.bootstrap, self.keys_per_layer, self.pull_weight = top_k, bootstrap, keys_per_layer, pull_weight
        self.first_layer = min(g_layers + e_layers)
        d = vit.dim
        self.g = nn.ParameterList([uniform((g_len, d), *init) for _ in g_layers])
        self.e = nn.ParameterList([uniform((pool, e_len, d), *init) for _ in e_layers])
        self.k = nn.ParameterList([uniform((pool, d), *init) for _ in (e_layers if keys_per_layer else [0])])

    def layer(self, l, q, B, train):
        loss, out_k, out_v = 0.0, [], []
        if l in self.e_layers:
            j = self.e_layers.index(l)
            K = self.k[j if self.keys_per_layer else 0]
            p = self.e[j]
            n_K = F.normalize(K, dim=1)
            qn = F.normalize(q, dim=1).detach()
            cos_sim = torch.einsum("bj,kj->bk", qn, n_K)
            i = self.e_len // 2
            if train and self.bootstrap:
                loss = (1.0 - cos_sim[:, self.task]).sum()
                P_ = p[self.task].expand(B, -1, -1)
                out_k.append(P_[:, :i, :].reshape(B, -1, p.shape[-1]))
                out_v.append(P_[:, i:, :].reshape(B, -1, p.shape[-1]))
            else:
                k_idx = torch.topk(cos_sim, self.top_k, dim=1).indices
                if train:
                    loss = (1.0 - torch.gather(cos_sim, 1, k_idx)).sum()
                P_ = p[k_idx]
                out_k.append(P_[:, :, :i, :].reshape(B, -1, p.shape[-1]))
                out_v.append(P_[:, :, i:, :].reshape(B, -1, p.shape[-1]))
        if l in self.g_layers:
            g = self.g[self.g_layers.index(l)]
            j = self.g_len // 2
            P_ = g.expand(B, -1, -1)
            out_k.append(P_[:, :j, :])
            out_v.append(P_[:, j:, :])
        if not out_k:
            return None, 0.0
        prefix = [torch.cat(out_k, dim=1), torch.cat(out_v, dim=1)] if len(out_k) > 1 else [out_k[0], out_v[0]]
        return prefix, loss * self.pull_weight


class CodaPrompt(CodaHarness):
    """zoo.py CodaPrompt: components P (M, L, D), keys K and attention A (M, D) per layer;
    alpha = cos(q * A, K); P = sum alpha P; earlier tasks' rows detached while training."""

    def __init__(self, vit, task, tasks, pool=100, length=8, layers=(0, 1, 2, 3, 4), ortho=0.0):
        super().__init__()
        self.task, self.tasks, self.pool, self.length, self.layers, self.ortho = task, tasks, pool, length, list(layers), ortho
        self.first_layer = min(self.layers)
        d = vit.dim
        # Gram-Schmidt-initialised rows in the official code; values do not change the cost.
        self.p = nn.ParameterList([nn.Parameter(torch.randn(pool, length, d) * 0.02) for _ in layers])
        self.k = nn.ParameterList([nn.Parameter(torch.randn(pool, d) * 0.02) for _ in layers])
        self.a = nn.ParameterList([nn.Parameter(torch.randn(pool, d) * 0.02) for _ in layers])

    @staticmethod
    def ortho_penalty(t):
        return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()

    def layer(self, l, x_querry, B, train):
        if l not in self.layers:
            return None, 0.0
        j = self.layers.index(l)
        K, A, p = self.k[j], self.a[j], self.p[j]
        pt = self.pool // self.tasks
        s, f = self.task * pt, (self.task + 1) * pt
        if train:
            if self.task > 0:
                K = torch.cat((K[:s].detach().clone(), K[s:f]), dim=0)
                A = torch.cat((A[:s].detach().clone(), A[s:f]), dim=0)
                p = torch.cat((p[:s].detach().clone(), p[s:f]), dim=0)
            else:
                K, A, p = K[s:f], A[s:f], p[s:f]
        else:
            K, A, p = K[0:f], A[0:f], p[0:f]
        a_querry = torch.einsum("bd,kd->bkd", x_querry, A)
        n_K = F.normalize(K, dim=1)
        q = F.normalize(a_querry, dim=2)
        aq_k = torch.einsum("bkd,kd->bk", q, n_K)
        P_ = torch.einsum("bk,kld->bld", aq_k, p)
        i = self.length // 2
        loss = 0.0
        if train and self.ortho > 0:
            loss = (self.ortho_penalty(K) + self.ortho_penalty(A) + self.ortho_penalty(p.view(p.shape[0], -1))) * self.ortho
        return [P_[:, :i, :], P_[:, i:, :]], loss


class VQ(nn.Module):
    """VQ-Prompt's VQPrompt.forward for one layer: soft mix, nearest pool entry, straight-through."""

    def __init__(self, d, pool=10, length=8, soft_t=1.0, vq_coef=0.4, comit_coef=0.1):
        super().__init__()
        self.p = uniform((pool, length, d), 0.0, 1.0)
        self.k = uniform((pool, d), 0.0, 1.0)
        self.soft_t, self.vq_coef, self.comit_coef = soft_t, vq_coef, comit_coef

    def forward(self, x_querry, train):
        K, p = self.k, self.p
        n_K = F.normalize(K, dim=1)
        cos_sim = torch.einsum("bd,kd->bk", x_querry, n_K)
        alpha = torch.softmax(cos_sim / self.soft_t, dim=1)
        p_a = torch.einsum("bk,kld->bld", alpha, p)
        dist = torch.pow(p_a.unsqueeze(1) - p, 2)
        d = dist.sum(-1).sum(-1)
        _, idxmin = d.min(1)
        quantized = p.index_select(0, idxmin.view(-1))
        loss = 0.0
        if train:
            e_latent_loss = F.mse_loss(p_a, quantized.detach())
            q_latent_loss = F.mse_loss(quantized, p_a.detach())
            loss = self.vq_coef * e_latent_loss + self.comit_coef * q_latent_loss
        return p_a + (quantized - p_a).detach(), loss


class VQPrompt(CodaHarness):
    """VQ-Prompt: a VQ pool of 10 prompts of length 8 at layers 0-4 (4 key + 4 value tokens)."""

    def __init__(self, vit, layers=(0, 1, 2, 3, 4), pool=10, length=8):
        super().__init__()
        self.layers, self.length = list(layers), length
        self.first_layer = min(self.layers)
        self.vq = nn.ModuleList([VQ(vit.dim, pool, length) for _ in layers])

    def layer(self, l, q, B, train):
        if l not in self.layers:
            return None, 0.0
        P_, loss = self.vq[self.layers.index(l)](q, train)
        i = self.length // 2
        return [P_[:, :i, :], P_[:, i:, :]], loss


class DualPromptOriginal(CodaHarness):
    """DualPrompt with the original semantics: G prefixes (separate key and value prefixes of 5)
    at layers 0-1; E prefixes at 2-4 from a pool of one entry per task, chosen once for all
    layers (top-1 cosine; the true task while training), pull (1 - cos).sum() / B.
    vq=True: the dual-vq hybrid, whose E prompts come from a VQ pool per layer instead."""

    def __init__(self, vit, task, tasks, length=5, vq=False):
        super().__init__()
        d = vit.dim
        self.task, self.L, self.use_vq = task, length, vq
        self.g = nn.ParameterList([uniform((2 * length, d), -1.0, 1.0) for _ in (0, 1)])
        if vq:
            self.vq = nn.ModuleList([VQ(d, 10, 2 * length) for _ in (2, 3, 4)])
        else:
            self.e = nn.ParameterList([uniform((tasks, 2 * length, d), -1.0, 1.0) for _ in (2, 3, 4)])
            self.e_key = uniform((tasks, d), -1.0, 1.0)

    def begin(self, q, B, train):
        self.pull = 0.0
        if self.use_vq:
            return
        cos = F.normalize(q, dim=1) @ F.normalize(self.e_key, dim=1).t()
        if train:
            self.ids = torch.full((B, 1), self.task, dtype=torch.int64, device=q.device)
            self.pull = (1.0 - cos.gather(1, self.ids)).sum() / B
        else:
            self.ids = cos.topk(1, dim=1).indices

    def layer(self, l, q, B, train):
        if l in (0, 1):
            g = self.g[l]
            return [g[:self.L].expand(B, -1, -1), g[self.L:].expand(B, -1, -1)], 0.0
        if l in (2, 3, 4):
            if self.use_vq:
                P_, loss = self.vq[l - 2](q, train)
            else:
                P_, loss = self.e[l - 2][self.ids[:, 0]], (self.pull if l == 2 else 0.0)
            return [P_[:, :self.L], P_[:, self.L:]], loss
        return None, 0.0


# --------------------------------------------------------------------------
# A method on the backbone: query pass, prompted features, head, training loss
# --------------------------------------------------------------------------
class Prompted(nn.Module):
    """query_depth: the blocks the query pass runs (all of them in the references). The blocks
    before the first prompted one, up to the query depth, are the same in both passes when no
    backbone parameter trains: computed once, as the framework's PromptedModel does."""

    def __init__(self, vit, method, classes, mlp_hidden=0, query_depth=None):
        super().__init__()
        self.vit, self.method = vit, method
        self.query_depth = vit.depth if query_depth is None else query_depth
        frozen = not any(p.requires_grad for p in vit.parameters())
        self.shared = min(method.first_layer, self.query_depth) if method.needs_query and frozen else 0
        layers = []
        for _ in range(mlp_hidden):
            layers += [nn.Linear(vit.dim, vit.dim), nn.ReLU()]
        self.head = nn.Sequential(*layers, nn.Linear(vit.dim, classes))

    def query(self, x):
        """norm(blocks[:query_depth](embed(x)))[:, 0] without gradient, and (the tokens after the
        shared blocks, their number) for the prompted pass, or None when it shares none."""
        with torch.no_grad():
            h = self.vit.embed(x)
            for blk in self.vit.blocks[:self.shared]:
                h = blk(h)
            t = h
            for blk in self.vit.blocks[self.shared:self.query_depth]:
                t = blk(t)
            q = self.vit.norm(t)[:, 0]
        return q, ((h, self.shared) if self.shared else None)

    def forward(self, x, train):
        q, start = None, None
        if self.method.needs_query:
            q, start = self.query(x)
        if start is None:
            feats, aux = self.method.features(self.vit, x, q, train)
        else:
            feats, aux = self.method.features(self.vit, x, q, train, start=start)
        return self.head(feats), aux


def masked_ce(logits, labels, first, stop):
    """Cross-entropy on the trained classes: every other logit is -inf (L2P/DualPrompt's
    train_mask, CODA's slicing of earlier tasks)."""
    index = torch.arange(logits.shape[1], device=logits.device)
    outside = (index < first) | (index >= stop)
    return F.cross_entropy(logits.masked_fill(outside, float("-inf")), labels)


PROMPT_METHODS = ["vpt-shallow", "vpt-deep", "l2p", "l2p-jax", "l2p++", "dualprompt", "dualprompt-coda",
                  "coda-prompt", "vq-prompt", "dual-vq", "vpt-deep-pool"]
BASELINES = ["linear", "full", "adapter", "bias", "sequential", "joint"]


def supported(name):
    return name in PROMPT_METHODS or name in BASELINES or _numbered(name, "partial-") or _numbered(name, "mlp-")


def _numbered(name, prefix):
    return name.startswith(prefix) and name[len(prefix):].isdigit() and int(name[len(prefix):]) > 0


def build(name, vit, tasks, classes, task, query_depth=None):
    """(model, current-task-only training logits) for a method name of the framework."""
    per_task = classes // tasks
    mlp_hidden = 0
    current_task = True
    if name == "vpt-shallow":
        method, current_task = Vpt(vit, deep=False), False
    elif name == "vpt-deep":
        method, current_task = Vpt(vit, deep=True, dropout=0.1), False
    elif name == "vpt-deep-pool":
        method = Vpt(vit, deep=True, pool=10)
    elif name == "l2p":
        method = L2P(vit)
    elif name == "l2p-jax":
        method = L2P(vit, pull=0.5, jax=True)
    elif name == "l2p++":
        method = DualPromptCoda(vit, task, g_layers=[], g_len=0, e_layers=[0], e_len=20, pool=30, top_k=5,
                                bootstrap=False, keys_per_layer=False)
    elif name == "dualprompt":
        method = DualPromptOriginal(vit, task, tasks)
    elif name == "dualprompt-coda":
        method = DualPromptCoda(vit, task, g_layers=[0, 1], g_len=6, e_layers=[2, 3, 4], e_len=20, pool=10, top_k=1,
                                bootstrap=True, keys_per_layer=True)
    elif name == "coda-prompt":
        method = CodaPrompt(vit, task, tasks)
    elif name == "vq-prompt":
        method = VQPrompt(vit)
    elif name == "dual-vq":
        method = DualPromptOriginal(vit, task, tasks, vq=True)
    elif name in ("linear", "full", "sequential", "joint", "bias") or _numbered(name, "partial-"):
        method, current_task = Plain(vit), False
        if name in ("full", "sequential", "joint"):
            for p in vit.parameters():
                p.requires_grad_(True)
        elif name == "bias":
            for n, p in vit.named_parameters():
                p.requires_grad_(n.endswith(".bias"))
        elif name.startswith("partial-"):
            k = int(name[len("partial-"):])
            for n, p in vit.named_parameters():
                p.requires_grad_(n.startswith("norm.") or (n.startswith("blocks.") and int(n.split(".")[1]) >= vit.depth - k))
    elif _numbered(name, "mlp-"):
        method, current_task, mlp_hidden = Plain(vit), False, int(name[len("mlp-"):])
    elif name == "adapter":
        method, current_task = Plain(vit, adapter_reduction=8), False
    else:
        raise SystemExit(f"error: method {name}: not implemented by the PyTorch peer")
    first, stop = (task * per_task, (task + 1) * per_task) if current_task else (0, (task + 1) * per_task)
    return Prompted(vit, method, classes, mlp_hidden, query_depth), first, stop


def make_optimizer(args, model):
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        return None, []
    head = [p for n, p in trainable if n.startswith("head.")]
    rest = [p for n, p in trainable if not n.startswith("head.")]
    if args.head_lr is not None:
        groups = [g for g in ({"params": rest, "lr": args.lr}, {"params": head, "lr": args.head_lr}) if g["params"]]
    else:
        groups = [{"params": rest + head, "lr": args.lr}]
    if args.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=args.lr, weight_decay=args.weight_decay)
    elif args.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return opt, [p for _, p in trainable]


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------
def status_bytes(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def synthetic(batch, size, first, count, device):
    """The bench's synthetic batch, value for value: pixel i = ((i * 2654435761) mod 2^32) / 2^32 * 2 - 1."""
    n = batch * 3 * size * size
    i = torch.arange(n, dtype=torch.int64)
    pixels = ((i * 2654435761) % 4294967296).double() / 4294967296.0 * 2.0 - 1.0
    images = pixels.float().reshape(batch, 3, size, size)
    labels = first + torch.arange(batch, dtype=torch.int64) % count
    return images.to(device), labels.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def finite(x):
    return "NaN" if x is None or (isinstance(x, float) and math.isnan(x)) else x


def measure(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    baseline = status_bytes("VmRSS")
    cuda_before = None
    if device.type == "cuda":
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info(device)
        cuda_before = total - free
    torch.manual_seed(args.seed)
    vit = load_vit(args.checkpoint, args.heads, args.image_size)
    if args.query_depth is not None and not 1 <= args.query_depth <= vit.depth:
        raise SystemExit(f"error: --query-depth {args.query_depth}: must be between 1 and the backbone's {vit.depth} blocks")
    model, first, stop = build(args.method, vit, args.tasks, args.classes, args.task, args.query_depth)
    model.to(device)
    opt, params = make_optimizer(args, model)
    per_task = args.classes // args.tasks
    images, labels = synthetic(args.batch_size, args.image_size, args.task * per_task, per_task, device)
    seen = (args.task + 1) * per_task

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def train_step():
        x = images.to(device, non_blocking=True)
        with autocast():
            logits, aux = model(x, True)
            loss = masked_ce(logits, labels, first, stop) + aux
        opt.zero_grad()
        loss.backward()
        if args.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        return loss.detach()

    def infer_step(correct):
        x = images.to(device, non_blocking=True)
        with autocast():
            logits, _ = model(x, False)
        correct += (logits[:, :seen].argmax(1) == labels).sum()
        predicted_task = logits[:, first:stop].argmax(1) + first
        correct += (predicted_task == labels).sum()

    cpu_seconds = {"train": [], "infer": []}

    def timed(step, count, kind):
        sync(device)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            step()
        sync(device)
        cpu_seconds[kind].append(time.process_time() - cpu)
        return time.perf_counter() - t

    train_seconds, loss_mean = [], float("nan")
    if opt is not None:
        model.train()
        total = torch.zeros((), device=device)

        def accumulate():
            total.add_(train_step())

        for _ in range(args.warmup):
            train_step()
        train_seconds = [timed(accumulate, args.steps, "train") for _ in range(args.repeats)]
        loss_mean = float(total) / (args.steps * args.repeats)

    model.eval()
    with torch.no_grad():
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for _ in range(args.warmup):
            infer_step(correct)
        infer_seconds = [timed(lambda: infer_step(correct), args.steps, "infer") for _ in range(args.repeats)]
        int(correct)

    phases = profile(args, model, opt, params, images, labels, first, stop, device) if args.profile and opt is not None else []
    flops = count_flops(model, opt, params, images, labels, first, stop, args) if args.count_flops else None
    result = {
        "Side": "pytorch",
        "Method": args.method,
        "TrainSeconds": train_seconds,
        "InferSeconds": infer_seconds,
        "TrainCpuSeconds": cpu_seconds["train"],
        "InferCpuSeconds": cpu_seconds["infer"],
        "ImagesPerRepeat": args.steps * args.batch_size,
        "TrainableParameters": sum(p.numel() for p in params),
        "BaselineRssBytes": baseline,
        "PeakRssBytes": status_bytes("VmHWM"),
        "CudaUsedBytes": None,
        "CudaAllocatedPeakBytes": None,
        "Loss": finite(loss_mean),
        "Phases": phases,
        "Library": LIBRARY,
    }
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        result["CudaUsedBytes"] = total - free - cuda_before
        result["CudaAllocatedPeakBytes"] = torch.cuda.max_memory_allocated(device)
    if flops is not None:
        result["ProfiledTrainFlops"], result["ProfiledInferFlops"] = flops
    return result


def profile(args, model, opt, params, images, labels, first, stop, device):
    """Phase times of the training step (medians), and torch.profiler's op table of one step."""
    model.train()
    samples = []
    for step in range(args.warmup + args.steps * args.repeats):
        marks = []

        def mark():
            sync(device)
            marks.append(time.perf_counter() * 1000.0)

        mark()
        x = images.to(device, non_blocking=True)
        mark()
        if model.method.needs_query:
            model.query(x)
        mark()
        logits, aux = model(x, True)
        mark()
        loss = masked_ce(logits, labels, first, stop) + aux
        mark()
        opt.zero_grad()
        loss.backward()
        mark()
        if args.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        mark()
        if step >= args.warmup:
            d = [b - a for a, b in zip(marks, marks[1:])]
            samples.append([d[0], d[1], d[2] - d[1], d[3], d[4], d[5]])
    names = ["batch to tensor", "query pass", "prompted forward", "loss", "backward", "optimiser (clip + step)"]
    phases = []
    for i, name in enumerate(names):
        values = sorted(s[i] for s in samples)
        n = len(values)
        med = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2.0
        phases.append({"Name": name, "Milliseconds": med})
    if args.profile_output:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities, record_shapes=False) as prof:
            logits, aux = model(images, True)
            loss = masked_ce(logits, labels, first, stop) + aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync(device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        with open(args.profile_output, "w") as f:
            f.write(f"# torch.profiler, one training step of {args.method} (batch {args.batch_size}, "
                    f"{args.threads} threads, {LIBRARY})\n")
            f.write(prof.key_averages().table(sort_by=sort, row_limit=30))
    return phases


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::conv2d")


def count_flops(model, opt, params, images, labels, first, stop, args):
    """Matmul FLOPs per image that the profiler saw executed (a check of the analytic counter;
    the profiler has no formula for convolution backward)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    def matmul_flops(prof):
        return sum(e.flops for e in prof.key_averages() if e.key in MATMUL_OPS and e.flops)

    model.train()
    train = 0
    if opt is not None:
        with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            logits, aux = model(images, True)
            loss = masked_ce(logits, labels, first, stop) + aux
            opt.zero_grad()
            loss.backward()
        train = matmul_flops(prof)
    model.eval()
    with torch.no_grad(), torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        model(images, False)
    return train // args.batch_size, matmul_flops(prof) // args.batch_size


def peak(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.size
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(max(1, args.repeats)):
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return {"MatmulPeakGflops": 2.0 * n ** 3 / best / 1e9, "Library": LIBRARY}


PRESETS = {"vit-tiny": (192, 12, 3), "vit-small": (384, 12, 6), "vit-base": (768, 12, 12), "vit-large": (1024, 24, 16)}


def create(args):
    dim, depth, heads = PRESETS[args.arch]
    torch.manual_seed(args.seed)
    vit = ViT(args.image_size, 16, dim, depth, heads, 4 * dim)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith(".weight") and p.dim() >= 2 or name == "pos_embed":
                nn.init.trunc_normal_(p, std=0.02)
    sd = dict(vit.state_dict())
    sd["head.weight"] = torch.zeros(1000, dim)
    sd["head.bias"] = torch.zeros(1000)
    write_safetensors(args.output, sd, {"format": "pt", "heads": str(heads)})
    return {"Output": args.output}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["measure", "peak", "create"])
    parser.add_argument("--method")
    parser.add_argument("--checkpoint")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head-lr", type=float)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--clip", type=float)
    parser.add_argument("--profile", action="store_true", help="phase times of the training step")
    parser.add_argument("--bf16", action="store_true", help="torch.autocast to bfloat16 around the forward passes and the loss")
    parser.add_argument("--query-depth", type=int, help="blocks the query pass runs (default: all); methods without one ignore it")
    parser.add_argument("--profile-output", help="with --profile: torch.profiler's op table of one step")
    parser.add_argument("--count-flops", action="store_true", help="matmul FLOPs per image seen by the profiler")
    parser.add_argument("--size", type=int, default=2048, help="peak: matrix size")
    parser.add_argument("--arch", choices=sorted(PRESETS), default="vit-tiny", help="create: preset")
    parser.add_argument("--output", required=True, help="JSON result (measure, peak) or safetensors (create)")
    args = parser.parse_args(argv)
    if args.mode == "measure":
        if not args.method or not args.checkpoint:
            parser.error("measure needs --method and --checkpoint")
        if not supported(args.method):
            raise SystemExit(f"error: method {args.method}: not implemented by the PyTorch peer")
        if args.heads is None:
            tensors, meta = read_safetensors(args.checkpoint)
            args.heads = int(meta.get("heads", max(1, tensors["patch_embed.proj.weight"].shape[0] // 64)))
            del tensors
        for name in ("warmup", "steps", "repeats", "threads", "batch_size"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
        result = measure(args)
    elif args.mode == "peak":
        result = peak(args)
    else:
        result = create(args)
    if args.mode != "create":
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The PyTorch peer of MiniDeepSeek's benchmarks: the same DeepSeek-V3 model written in plain
PyTorch (fp32, eager, no torch.compile), trained with AdamW on random tokens at the shapes of
bench/train.ts, plus the two ceilings the GPU run compares against.

The architecture follows docs/deepseek-v3.md and model/*.ts exactly; module names are the HF
DeepSeek-V3 tensor names (`model.layers.{i}.self_attn.kv_a_proj_with_mqa.weight`, ...), so
`state_dict()` keys equal the names in model/params.ts.

    MLA        c_q = RMSNorm(W_qa x), q = W_qb c_q (or W_q x), per head [q_nope ; q_pe];
               [c_kv ; k_pe_raw] = W_kva x, c = RMSNorm(c_kv), k_pe = RoPE(k_pe_raw) shared by
               the heads, per head [k_nope ; v] = W_kvb c; interleaved RoPE (pairs 2i, 2i+1) on
               the dr dims, YaRN frequencies and mscale when max_seq_len > original_seq_len;
               causal softmax(q k^T * scale) v through F.scaled_dot_product_attention; W_o.
    FFN        dense SwiGLU for the first n_dense_layers blocks, DeepSeekMoE after: s =
               sigmoid(W_g u); selection on s + b, group-limited (group score = sum of the top-2
               biased scores, keep n_limited_groups groups, top-K of their experts); weights =
               unbiased s at the chosen experts, normalized, times route_scale; tokens dispatched
               to experts by sorting the chosen expert ids (argsort), one GEMM chain per expert,
               combined with index_add; a shared expert with no gate; no token dropping.
    losses     mean CE over targets >= 0; MTP depth D: module k embeds token i + k (shared
               embedding), h' = eh_proj [hnorm(h) ; enorm(emb)], a full MLA + MoE block, the
               shared head after its own norm, loss (lambda / D) sum_k CE_k; the
               complementary sequence-wise balance loss of every MoE block (MTP's included),
               averaged over sequences; after each AdamW step the aux-loss-free bias update
               b += gamma * sign(mean(load) - load).
    optimizer  AdamW (beta 0.9 / 0.95, eps 1e-8, weight decay 0.1 on matrices only, lr 1e-3),
               global gradient-norm clip 1.0, as train/optimizer.ts.

Subcommands:
    train     --config FILE (written by `deno run -A bench/train.ts --preset P --json FILE`,
              or with --config-only): trains that preset at its B, T; prints tokens/s.
    matmul    fp32 GEMM rate of torch.mm (TF32 off): the measured fp32 ceiling of the card.
    attention --from FILE (bench/attention.ts --json): SDPA fp32 causal attention, forward and
              forward + backward, at the same shapes.
    parity    --ref FILE: loads parameters and a batch exported from model/reference.ts and
              compares losses and gradients (float64 on the CPU): a check of this file.

Only torch is imported (json, argparse, math, time from the standard library). Timing: CUDA
events around `--steps` steps after `--warmup` steps; on the CPU, wall time.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# Model


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def linear(n_in, n_out):
    return nn.Linear(n_in, n_out, bias=False)  # weight [out, in], the HF layout


def rope_frequencies(c):
    """Inverse frequencies [dr/2] with the YaRN correction, as kernels/rope_freqs.ts."""
    dim, theta = c["qk_rope_head_dim"], c["rope_theta"]
    freqs = [1.0 / theta ** (2 * i / dim) for i in range(dim // 2)]
    if c["max_seq_len"] > c["original_seq_len"]:

        def corr(rot):
            return dim * math.log(c["original_seq_len"] / (rot * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(corr(c["beta_fast"])), 0)
        high = min(math.ceil(corr(c["beta_slow"])), dim - 1)
        if low == high:
            high += 0.001
        for i in range(dim // 2):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            smooth = 1 - ramp
            freqs[i] = freqs[i] / c["rope_factor"] * (1 - smooth) + freqs[i] * smooth
    # rounded to f32 once, like the TypeScript tables
    return torch.tensor(freqs, dtype=torch.float32)


def softmax_scale(c):
    s = 1.0 / math.sqrt(c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
    if c["max_seq_len"] > c["original_seq_len"]:
        m = 0.1 * c["mscale"] * math.log(c["rope_factor"]) + 1
        s *= m * m
    return s


def apply_rope(x, cos, sin):
    """x [B, T, H, dr], cos/sin [T, dr/2]: rotates pairs (2i, 2i+1)."""
    B, T, H, dr = x.shape
    xp = x.view(B, T, H, dr // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    cos, sin = cos[None, :T, None, :], sin[None, :T, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).view(B, T, H, dr)


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H = c["dim"], c["n_heads"]
        self.H, self.dn, self.dr, self.dv = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.rkv, rq = c["kv_lora_rank"], c["q_lora_rank"]
        qk = self.dn + self.dr
        if rq > 0:
            self.q_a_proj = linear(D, rq)
            self.q_a_layernorm = RMSNorm(rq, c["norm_eps"])
            self.q_b_proj = linear(rq, H * qk)
        else:
            self.q_proj = linear(D, H * qk)
        self.kv_a_proj_with_mqa = linear(D, self.rkv + self.dr)
        self.kv_a_layernorm = RMSNorm(self.rkv, c["norm_eps"])
        self.kv_b_proj = linear(self.rkv, H * (self.dn + self.dv))
        self.o_proj = linear(H * self.dv, D)
        self.scale = softmax_scale(c)

    def forward(self, x, cos, sin):  # x [B, T, D]
        B, T, _ = x.shape
        H, dn, dr, dv = self.H, self.dn, self.dr, self.dv
        if hasattr(self, "q_b_proj"):
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q_nope, q_pe = q.view(B, T, H, dn + dr).split([dn, dr], -1)
        q = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], -1)  # [B, T, H, dn + dr]
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.rkv, dr], -1)
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin)  # [B, T, 1, dr]: one key for all heads
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(B, T, H, dn + dv)
        k_nope, v = kv.split([dn, dv], -1)
        k = torch.cat([k_nope, k_pe.expand(B, T, H, dr)], -1)  # [B, T, H, dn + dr]
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=self.scale
        )  # [B, H, T, dv]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * dv))


class SwiGLU(nn.Module):
    def __init__(self, D, inter):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = linear(D, inter), linear(D, inter), linear(inter, D)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, D, E):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(E, D))
        # the balancing bias: selection only, no gradient, updated by the aux-loss-free rule
        self.register_buffer("e_score_correction_bias", torch.zeros(E))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, E = c["dim"], c["n_routed_experts"]
        self.E, self.K = E, c["n_activated_experts"]
        self.G, self.KG = c["n_expert_groups"], c["n_limited_groups"]
        self.route_scale, self.alpha = c["route_scale"], c["balance_alpha"]
        self.gate = Gate(D, E)
        self.experts = nn.ModuleList(SwiGLU(D, c["moe_inter_dim"]) for _ in range(E))
        S = c["n_shared_experts"]
        self.shared_experts = SwiGLU(D, S * c["moe_inter_dim"]) if S > 0 else None

    def forward(self, u, B):  # u [N, D], N = B * T
        N, E, K, G = u.shape[0], self.E, self.K, self.G
        s = torch.sigmoid(F.linear(u, self.gate.weight))  # [N, E]
        with torch.no_grad():
            sb = s + self.gate.e_score_correction_bias
            if G > 1:
                per = E // G
                gs = sb.view(N, G, per).topk(min(2, per), -1).values.sum(-1)  # [N, G]
                keep = torch.zeros(N, G, dtype=torch.bool, device=u.device)
                keep.scatter_(1, gs.topk(self.KG, -1).indices, True)
                sb = sb.masked_fill(~keep.repeat_interleave(per, 1), float("-inf"))
            idx = sb.topk(K, -1).indices  # [N, K]
        w = s.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * self.route_scale  # [N, K], gradient reaches the gate

        # Token dispatch by sorting: routed rows grouped by expert, token order within one.
        flat = idx.reshape(-1)  # [N * K]
        order = torch.argsort(flat, stable=True)
        token = order // K
        counts = torch.bincount(flat, minlength=E)  # the loads
        xs = u[token]  # [N * K, D]
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):  # one host sync per layer, as eager MoE code does
            if n:
                outs.append(self.experts[e](xs[start : start + n]))
            start += n
        ys = torch.cat(outs) * w.reshape(-1)[order].unsqueeze(1)
        y = torch.zeros_like(u).index_add(0, token, ys)
        if self.shared_experts is not None:
            y = y + self.shared_experts(u)

        # Complementary sequence-wise balance loss (V3 eq. 17-20), averaged over the B sequences.
        T = N // B
        with torch.no_grad():
            cnt = torch.zeros(B, E, device=u.device, dtype=u.dtype)
            cnt.scatter_add_(1, idx.view(B, T * K), torch.ones(B, T * K, device=u.device, dtype=u.dtype))
            f = cnt * (E / (K * T))
        p = (s / s.sum(-1, keepdim=True)).view(B, T, E).mean(1)  # [B, E]
        balance = self.alpha * (f * p).sum(-1).mean()
        return y, balance, counts


class Block(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(c["dim"], c["norm_eps"])
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c["dim"], c["norm_eps"])
        self.mlp = MoE(c) if moe else SwiGLU(c["dim"], c["inter_dim"])

    def forward(self, x, cos, sin, aux):  # x [B, T, D]; aux collects (balance, loads)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        u = self.post_attention_layernorm(x)
        if isinstance(self.mlp, MoE):
            B, T, D = u.shape
            y, balance, loads = self.mlp(u.reshape(B * T, D), B)
            aux.append((balance, loads))
            return x + y.view(B, T, D)
        return x + self.mlp(u)


class MTPBlock(Block):
    """MTP module k: its own enorm, hnorm, eh_proj and shared_head.norm around a MoE block."""

    def __init__(self, c):
        super().__init__(c, moe=True)
        D = c["dim"]
        self.enorm, self.hnorm = RMSNorm(D, c["norm_eps"]), RMSNorm(D, c["norm_eps"])
        self.eh_proj = linear(2 * D, D)
        self.shared_head = nn.Module()
        self.shared_head.norm = RMSNorm(D, c["norm_eps"])


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["dim"])
        L, Ld = c["n_layers"], c["n_dense_layers"]
        blocks = [Block(c, moe=i >= Ld) for i in range(L)]
        blocks += [MTPBlock(c) for _ in range(c["mtp_depth"])]  # layer indices n_layers + k - 1
        self.layers = nn.ModuleList(blocks)
        self.norm = RMSNorm(c["dim"], c["norm_eps"])


class DeepSeekV3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head = linear(c["dim"], c["vocab_size"])  # not tied to the embedding
        freqs = rope_frequencies(c)
        ang = torch.arange(c["max_seq_len"], dtype=torch.float64)[:, None] * freqs.double()[None, :]
        self.register_buffer("rope_cos", torch.cos(ang).float(), persistent=False)
        self.register_buffer("rope_sin", torch.sin(ang).float(), persistent=False)

    def init_weights(self, generator=None):
        std = self.c["init_std"]
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, std, generator=generator)
            else:
                nn.init.ones_(p)

    def forward(self, tokens, targets):  # tokens, targets [B, T] int64; target -1 is ignored
        c, B, T = self.c, tokens.shape[0], tokens.shape[1]
        cos, sin = self.rope_cos.to(self.lm_head.weight.dtype), self.rope_sin.to(self.lm_head.weight.dtype)
        layers, L = self.model.layers, c["n_layers"]
        aux = []
        h = self.model.embed_tokens(tokens)
        for i in range(L):
            h = layers[i](h, cos, sin, aux)
        V = c["vocab_size"]
        logits = self.lm_head(self.model.norm(h))
        losses = {"main": F.cross_entropy(logits.view(-1, V), targets.reshape(-1), ignore_index=-1)}
        total = losses["main"]
        ces = []
        for k in range(1, c["mtp_depth"] + 1):
            m = layers[L + k - 1]
            tok_k = torch.zeros_like(tokens)  # token i + k; token 0 past the end (ignored target)
            tok_k[:, : T - k] = tokens[:, k:]
            tgt_k = torch.full_like(targets, -1)
            tgt_k[:, : T - k] = targets[:, k:]
            x = m.eh_proj(torch.cat([m.hnorm(h), m.enorm(self.model.embed_tokens(tok_k))], -1))
            h = m(x, cos, sin, aux)
            lk = self.lm_head(m.shared_head.norm(h))
            ces.append(F.cross_entropy(lk.view(-1, V), tgt_k.reshape(-1), ignore_index=-1))
        if ces:
            losses["mtp"] = sum(ces) * (c["mtp_lambda"] / len(ces))
            total = total + losses["mtp"]
        if aux:
            losses["balance"] = sum(b for b, _ in aux)
            total = total + losses["balance"]
        losses["total"] = total
        return losses, [loads for _, loads in aux]

    def moe_layers(self):
        return [blk.mlp for blk in self.model.layers if isinstance(blk.mlp, MoE)]

    @torch.no_grad()
    def update_biases(self, loads):
        """Aux-loss-free balancing (V3 section 2.1.2): b_i += gamma * sign(mean(load) - load_i)."""
        gamma = self.c["bias_update_speed"]
        for moe, load in zip(self.moe_layers(), loads):
            load = load.to(moe.gate.e_score_correction_bias.dtype)
            moe.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)


def make_optimizer(model, lr, fused):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **kw)


# ---------------------------------------------------------------------------------------------
# Commands


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def set_precision(tf32):
    # fp32 means IEEE fp32 here, as our WGSL kernels compute: TF32 tensor cores are off
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


class Timer:
    """CUDA events on a GPU, wall time on the CPU; milliseconds."""

    def __init__(self, dev):
        self.cuda = dev.type == "cuda"

    def start(self):
        if self.cuda:
            self.e0, self.e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.e0.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.e1.record()
            self.e1.synchronize()
            return self.e0.elapsed_time(self.e1)
        return (time.perf_counter() - self.t0) * 1000


def device_name(dev):
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)


def cmd_train(args):
    with open(args.config) as f:
        spec = json.load(f)
    c = spec["config"]
    B = args.batch or spec["B"]
    T = args.seq or spec["T"]
    steps = args.steps or spec.get("steps", 5)
    dev = pick_device(args.device)
    set_precision(args.tf32)
    torch.manual_seed(1)
    with torch.device(dev):
        model = DeepSeekV3(c)
    model.init_weights()
    fused = dev.type == "cuda" and not args.no_fused_adamw
    opt = make_optimizer(model, 1e-3, fused)
    V = c["vocab_size"]
    g = torch.Generator(device=dev).manual_seed(2)
    tokens = torch.randint(0, V, (B, T), device=dev, generator=g)
    targets = torch.randint(0, V, (B, T), device=dev, generator=g)
    params = list(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        losses, loads = model(tokens, targets)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        model.update_biases(loads)
        return losses

    timer = Timer(dev)
    timer.start()
    for _ in range(args.warmup):
        losses = step()
    warm_ms = timer.stop()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    timer.start()
    for _ in range(steps):
        losses = step()
    step_ms = timer.stop() / steps
    tok_s = B * T / (step_ms / 1000)
    # the FLOP count of bench/train.ts at this B, T: 6 x GEMM parameters x tokens + causal attention
    flops = None
    if "gemm_params" in spec:
        attn = 3 * B * T * T * c["n_heads"] * (c["qk_nope_head_dim"] + c["qk_rope_head_dim"] + c["v_head_dim"])
        flops = 6 * spec["gemm_params"] * B * T + attn * (c["n_layers"] + c["mtp_depth"])
    res = {
        "preset": spec.get("preset"),
        "device": device_name(dev),
        "torch": torch.__version__,
        "B": B,
        "T": T,
        "steps": steps,
        "tf32": args.tf32,
        "fused_adamw": fused,
        "params": sum(p.numel() for p in params),
        "warmup_ms": warm_ms,
        "step_ms": step_ms,
        "tokens_per_s": tok_s,
        "achieved_gflops": flops / (step_ms / 1000) / 1e9 if flops else None,
        "loss": {k: v.item() for k, v in losses.items()},
        "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
    print(
        f"torch {torch.__version__} on {res['device']}: preset {res['preset']}, {res['params']} parameters, "
        f"B={B} T={T}, fp32{' (TF32 on)' if args.tf32 else ''}, eager, AdamW fused={fused}"
    )
    print(
        f"step {step_ms:.1f} ms (warm-up {warm_ms / 1000:.1f} s for {args.warmup}), {tok_s:.0f} tokens/s"
        + (f", {res['achieved_gflops']:.0f} GFLOP/s" if flops else "")
        + f", loss {res['loss']['total']:.4f}"
    )
    write_json(args.json, res)


def cmd_matmul(args):
    dev = pick_device(args.device)
    set_precision(args.tf32)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        a = torch.randn(n, n, device=dev)
        b = torch.randn(n, n, device=dev)
        out = torch.empty(n, n, device=dev)
        for _ in range(3):
            torch.mm(a, b, out=out)
        timer, times = Timer(dev), []
        for _ in range(args.reps):
            timer.start()
            torch.mm(a, b, out=out)
            times.append(timer.stop())
        ms = sorted(times)[len(times) // 2]
        gflops = 2 * n**3 / (ms / 1000) / 1e9
        rows.append({"n": n, "ms": ms, "gflops": gflops})
        print(f"torch.mm fp32{' TF32' if args.tf32 else ''} {n}^3: {ms:.3f} ms, {gflops:.0f} GFLOP/s (median of {args.reps})")
        # after every size: a run cut off by its time box keeps what it measured
        write_json(args.json, {"device": device_name(dev), "tf32": args.tf32, "rows": rows})


def cmd_attention(args):
    with open(getattr(args, "from")) as f:
        ours = json.load(f)
    dev = pick_device(args.device)
    set_precision(args.tf32)
    out_rows = []
    seen = {}
    for r in ours["rows"]:
        key = (r["preset"], r["B"], r["T"], r["H"], r["dqk"], r["dv"])
        if key not in seen:
            B, T, H, dqk, dv = r["B"], r["T"], r["H"], r["dqk"], r["dv"]
            q = torch.randn(B, H, T, dqk, device=dev, requires_grad=True)
            k = torch.randn(B, H, T, dqk, device=dev, requires_grad=True)
            v = torch.randn(B, H, T, dv, device=dev, requires_grad=True)
            dout = torch.randn(B, H, T, dv, device=dev)
            scale = 1 / math.sqrt(dqk)

            def fwd():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

            def fwd_bwd():
                fwd().backward(dout)

            res = {}
            for mode, fn in (("fwd", lambda: fwd()), ("fwd+bwd", fwd_bwd)):
                for _ in range(3):
                    fn()
                timer, times = Timer(dev), []
                for _ in range(args.reps):
                    timer.start()
                    fn()
                    times.append(timer.stop())
                res[mode] = sorted(times)[len(times) // 2]
            seen[key] = res
        ms = seen[key][r["mode"]]
        ours_ms = r["fused_gpu_ms"] or r["fused_ms"]
        row = dict(r, torch_ms=ms, ours_over_torch=ours_ms / ms)
        out_rows.append(row)
        print(
            f"{r['preset']:6} B={r['B']:<4} T={r['T']:<5} {r['mode']:8} torch SDPA {ms:8.3f} ms   "
            f"ours fused {ours_ms:8.3f} ms ({'gpu' if r['fused_gpu_ms'] else 'wall'})   ours/torch {ours_ms / ms:6.2f}x"
        )
        write_json(args.json, {"device": device_name(dev), "rows": out_rows})


def cmd_parity(args):
    """Loads a reference export (parameters, batch, losses, gradients from model/reference.ts)
    and checks this file's model against it in float64 on the CPU."""
    with open(args.ref) as f:
        ref = json.load(f)
    c, B, T = ref["config"], ref["B"], ref["T"]
    torch.set_default_dtype(torch.float64)
    model = DeepSeekV3(c)
    sd = model.state_dict()
    params = ref["params"]
    missing = [k for k in sd if k not in params and not k.startswith("rope_")]
    extra = [k for k in params if k not in sd]
    if missing or extra:
        print(f"parity: names differ: missing {missing[:5]}, unknown {extra[:5]}")
        sys.exit(1)
    with torch.no_grad():
        for k, v in params.items():
            sd[k].copy_(torch.tensor(v, dtype=torch.float64).view(sd[k].shape))
    tokens = torch.tensor(ref["tokens"]).view(B, T)
    targets = torch.tensor(ref["targets"]).view(B, T)
    losses, loads = model(tokens, targets)
    losses["total"].backward()
    worst = 0.0
    for k in ("main", "mtp", "balance", "total"):
        d = abs(losses[k].item() - ref["losses"][k])
        worst = max(worst, d / max(1.0, abs(ref["losses"][k])))
        print(f"loss {k:8} torch {losses[k].item():.12f}  reference {ref['losses'][k]:.12f}  |diff| {d:.2e}")
    named = dict(model.named_parameters())
    gworst = 0.0
    for k, g in ref["grads"].items():
        got = named[k].grad
        want = torch.tensor(g, dtype=torch.float64).view(named[k].shape)
        got = torch.zeros_like(want) if got is None else got
        rel = float((got - want).abs().max()) / max(1e-12, float(want.abs().max()))
        gworst = max(gworst, rel)
    print(f"gradients: {len(ref['grads'])} tensors, worst max|diff| / max|ref| {gworst:.2e}")
    got_loads = [ld.tolist() for ld in loads]
    same_loads = got_loads == ref["loads"]
    print(f"expert loads equal: {same_loads}")
    ok = worst < 1e-9 and gworst < 1e-7 and same_loads
    print("parity OK" if ok else "parity FAILED")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "matmul", "attention", "parity"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
        p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
        p.add_argument("--tf32", action="store_true", help="let fp32 GEMMs use TF32 tensor cores")
        p.add_argument("--json", help="write the results here")
        if name == "train":
            p.add_argument("--config", required=True, help="JSON from bench/train.ts --json")
            p.add_argument("--batch", type=int, help="override B")
            p.add_argument("--seq", type=int, help="override T")
            p.add_argument("--steps", type=int, help="timed steps (default: the JSON's)")
            p.add_argument("--warmup", type=int, default=2)
            p.add_argument("--no-fused-adamw", action="store_true")
        elif name == "matmul":
            p.add_argument("--sizes", default="4096,8192")
            p.add_argument("--reps", type=int, default=10)
        elif name == "attention":
            p.add_argument("--from", required=True, help="JSON from bench/attention.ts --json")
            p.add_argument("--reps", type=int, default=10)
        else:
            p.add_argument("--ref", required=True, help="JSON exported from model/reference.ts")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"train": cmd_train, "matmul": cmd_matmul, "attention": cmd_attention, "parity": cmd_parity}[args.cmd](args)


if __name__ == "__main__":
    main()

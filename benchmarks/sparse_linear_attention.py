"""Benchmark of sparse-linear attention (SLA): linzoo's fused Triton op against its peers, in one process.

Peers (kernels.md §6.1 (e)), all on the same q, k, v and the same block map (the LUT of ``sla_block_map``,
computed outside the timed region, as the official benchmark does):

- ``ours``: ``sparse_linear_attention(..., linear_keys="all")`` (both branches: Triton sparse + fused linear);
  ``ours_compl``: ``linear_keys="complement"`` (paper / SLA-1 form); ``ours_sparse``: the sparse branch alone;
- ``official`` / ``official_sla1``: thu-ml/SLA's main-branch kernel + its PyTorch linear branch, and the SLA-1
  fused kernel (both branches), when carried under ``.peers/sla/{main,SLA-1}`` (``scripts/fetch_sla_peer.sh``);
  compared with ``ours`` and ``ours_compl`` respectively;
- ``flex_sparse``: FlexAttention with a BlockMask built from the same LUT (sparse branch only; vs ``ours_sparse``);
  ``flex_linear``: that plus the linear branch in PyTorch (vs ``ours``);
- ``sdpa_flash`` / ``sdpa_cudnn``: dense softmax attention (what SLA replaces).

Shapes (§6.2): Wan2.1-1.3B (B1 H12 N32760 d128) and the official benchmark (B2 H16 N32760 d128) at sparsity
0.90/0.95/0.97 with BLKQ 128 / BLKK 64, plus two DiT shapes. bf16; forward (inference mode) and forward+backward
(backward alone = the difference, the official benchmark's "bwd"). Medians of ``triton.testing.do_bench`` (L2
cleared), CUDA-graph replays for ours where a call is under 3 ms. Dense-equivalent TFLOP/s = 4·B·H·N²·d / t for
the forward (the official convention; ×2.5 for the backward), and % of the floor t = max(FLOPs / peak,
bytes / bandwidth) with the work actually done (kernels.md §5.2 (e): sparse 4·BHN²d·ρ, ρ = selected fraction;
linear 4·BHNd²; backward 2.5× sparse + 2× linear; bytes e·BHN·5d forward, + e·BHN·9d backward), peak bf16
matmul and copy bandwidth measured in the same run.

Writes ``docs/benchmarks/sparse_linear_attention.{md,json,png}`` (and the same under ``--out DIR``).

    python benchmarks/sparse_linear_attention.py [--quick] [--out DIR] [--cases 0,2-3] [--skip-peers a,b]
    python benchmarks/sparse_linear_attention.py --render docs/benchmarks/sparse_linear_attention.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kernel_bench import as_tuple, generated_marker, kept_notes, pyplot, time_op

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
PEER_DIR = Path(os.environ.get("LINZOO_SLA_PEER_DIR", ROOT / ".peers" / "sla"))
PEERS = (
    "ours", "ours_compl", "ours_sparse", "official", "official_sla1", "flex_sparse", "flex_linear", "sdpa_flash",
    "sdpa_cudnn",
)  # fmt: skip
BASE = {"official": "ours", "official_sla1": "ours_compl", "flex_sparse": "ours_sparse", "flex_linear": "ours",
        "sdpa_flash": "ours", "sdpa_cudnn": "ours"}  # fmt: skip  # the row each peer's ratio is taken against
OURS = ("ours", "ours_compl", "ours_sparse")
DEVICE = "cuda"  # the CPU smoke test (tests/kernels/test_sla_benchmark.py) builds the peers on "cpu"

# (label, B, H, N, d, block_q, block_k, sparsity); in order of priority (a run cut short keeps the first rows)
CASES = [
    ("Wan2.1-1.3B s0.95", 1, 12, 32760, 128, 128, 64, 0.95),
    ("SLA bench s0.95", 2, 16, 32760, 128, 128, 64, 0.95),
    ("DiT N4096 d128 s0.80", 2, 24, 4096, 128, 128, 64, 0.80),
    ("SLA bench s0.90", 2, 16, 32760, 128, 128, 64, 0.90),
    ("SLA bench s0.97", 2, 16, 32760, 128, 128, 64, 0.97),
    ("Wan2.1-1.3B s0.90", 1, 12, 32760, 128, 128, 64, 0.90),
    ("DiT N16384 d64 s0.90", 1, 16, 16384, 64, 64, 64, 0.90),
]
QUICK_CASES = ("Wan2.1-1.3B s0.95", "DiT N4096 d128 s0.80")


# --------------------------------------------------------------------------------------------------
# work and floor (CPU-side, tested)
# --------------------------------------------------------------------------------------------------
def selected_fraction(n: int, block_k: int, sparsity: float) -> tuple[int, float]:
    """(T, ρ): key blocks each query block keeps (the op's count) and the fraction of blocks they are."""
    from linzoo.kernels.sparse_linear_attention import num_selected_blocks

    n_kb = -(-n // block_k)
    t = num_selected_blocks(1.0 - sparsity, n_kb)
    return t, t / n_kb


def dense_flops(b: int, h: int, n: int, d: int, mode: str) -> float:
    """Dense-equivalent FLOPs (the official benchmark's count): 4·BHN²d forward, ×2.5 for the backward."""
    fwd = 4.0 * b * h * n * n * d
    return fwd if mode == "fwd" else fwd * 3.5


def work(b: int, h: int, n: int, d: int, rho: float, elem: int, mode: str) -> tuple[float, float]:
    """(FLOPs, compulsory bytes) of SLA actually done (kernels.md §5.2 (e))."""
    sparse, linear = 4.0 * b * h * n * n * d * rho, 4.0 * b * h * n * d * d
    flops, moved = sparse + linear, elem * b * h * n * 5 * d
    if mode != "fwd":
        flops += 2.5 * sparse + 2 * linear
        moved += elem * b * h * n * 9 * d
    return flops, moved


def floor_ms(flops: float, moved: float, peak_flops: float, bandwidth: float) -> float:
    """Lower bound of the time in ms: the larger of compute and memory time."""
    return 1e3 * max(flops / peak_flops, moved / bandwidth)


# --------------------------------------------------------------------------------------------------
# peers (GPU)
# --------------------------------------------------------------------------------------------------
def _load_official(branch: str):
    """The official ``kernel`` module of ``branch`` from PEER_DIR (never installed), or an "n/a" string."""
    path = PEER_DIR / branch / "sparse_linear_attention" / "kernel.py"
    if not path.is_file():
        return f"n/a (not carried: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})"
    spec = importlib.util.spec_from_file_location(f"sla_official_{branch.replace('-', '_')}_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_peers(case, dtype, flex_compiled):
    from linzoo.kernels import sla_block_map, sparse_linear_attention
    from linzoo.kernels.sparse_linear_attention import _sparse_op

    label, b, h, n, d, bq, bk, sparsity = case
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device=DEVICE, dtype=dtype, generator=g) for _ in range(3))
    topk = 1.0 - sparsity
    lut, block_mask = sla_block_map(q, k, topk=topk, block_q=bq, block_k=bk)
    kw = dict(topk=topk, block_q=bq, block_k=bk, lut=lut, backend="triton")
    scale = d**-0.5
    peers = {
        "ours": lambda q, k, v: sparse_linear_attention(q, k, v, **kw),
        "ours_compl": lambda q, k, v: sparse_linear_attention(q, k, v, linear_keys="complement", **kw),
        "ours_sparse": lambda q, k, v: _sparse_op(q, k, v, lut, bq, bk, scale)[0],
    }

    def torch_linear(q, k, v):  # the official main branch's linear part (PyTorch, input dtype)
        fq, fk = q.softmax(-1), k.softmax(-1)
        return (fq @ (fk.transpose(-1, -2) @ v)) / (1e-5 + (fq * fk.sum(-2, keepdim=True)).sum(-1, keepdim=True))

    smap = block_mask.to(torch.int8).contiguous()
    n_sel = lut.shape[-1]
    for name, branch in (("official", "main"), ("official_sla1", "SLA-1")):
        try:
            mod = _load_official(branch)
        except Exception as exc:  # a carried copy that does not import
            mod = f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
        if isinstance(mod, str):
            peers[name] = mod
        elif bq not in (64, 128) or bk != 64:
            peers[name] = "n/a (official kernels: BLKQ 64/128, BLKK 64)"
        elif name == "official":
            peers[name] = lambda q, k, v, m=mod: (
                m._attention.apply(q, k, v, smap, lut, n_sel, bq, bk), torch_linear(q, k, v))  # fmt: skip
        else:
            peers[name] = lambda q, k, v, m=mod: m._attention.apply(
                q, k, v, q.softmax(-1).contiguous(), k.softmax(-1).contiguous(), smap, lut, n_sel, bq, bk
            )
    try:
        from torch.nn.attention.flex_attention import BlockMask

        n_qb, n_kb = lut.shape[2], -(-n // bk)
        indices = torch.zeros((b, h, n_qb, n_kb), dtype=torch.int32, device=DEVICE)
        indices[..., :n_sel] = lut
        counts = torch.full((b, h, n_qb), n_sel, dtype=torch.int32, device=DEVICE)

        def block_mod(b_, h_, q_idx, kv_idx):  # the semantics (eager Flex applies only this); the kernel skips it
            return block_mask[b_, h_, q_idx // bq, kv_idx // bk]  # inside full blocks

        flex_mask = BlockMask.from_kv_blocks(
            torch.zeros_like(counts), indices, counts, indices, BLOCK_SIZE=(bq, bk), mask_mod=block_mod,
            seq_lengths=(n, n),
        )  # fmt: skip  # the selected blocks as full blocks
        opts = None if bq >= 128 else {"BLOCK_M": bq, "BLOCK_N": bk}
        peers["flex_sparse"] = lambda q, k, v: flex_compiled(q, k, v, block_mask=flex_mask, kernel_options=opts)
        peers["flex_linear"] = lambda q, k, v: (peers["flex_sparse"](q, k, v), torch_linear(q, k, v))
    except Exception as exc:
        peers["flex_sparse"] = peers["flex_linear"] = f"n/a ({type(exc).__name__}: {str(exc)[:60]})"
    for name, backend in (("sdpa_flash", "FLASH_ATTENTION"), ("sdpa_cudnn", "CUDNN_ATTENTION")):

        def sdpa(q, k, v, _backend=backend):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(getattr(SDPBackend, _backend)):
                return F.scaled_dot_product_attention(q, k, v)

        peers[name] = sdpa
    return (q, k, v), peers, lut


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _errors(inputs, peers, lut, case) -> dict:
    """Correctness gates on the first two heads: ours vs the fp32 reference, each peer's o_s vs ours."""
    from linzoo.kernels import sparse_linear_attention_reference

    label, b, h, n, d, bq, bk, sparsity = case
    sub = tuple(t[:1, :2].contiguous() for t in inputs)
    sub_lut = lut[:1, :2].contiguous()
    errs = {}
    with torch.inference_mode():
        ref = sparse_linear_attention_reference(*(t.float() for t in sub), lut=sub_lut, block_q=bq, block_k=bk)
        ours = peers["ours"](*inputs)
        errs["ours_o_s"], errs["ours_o_l"] = _rel(ours[0][:1, :2], ref[0]), _rel(ours[1][:1, :2], ref[1])
        for name in ("official", "flex_sparse"):
            if callable(peers.get(name)):
                try:
                    errs[f"{name}_o_s"] = _rel(as_tuple(peers[name](*inputs))[0], ours[0])
                except Exception as exc:
                    errs[f"{name}_o_s"] = f"{type(exc).__name__}"
    return errs


def run_case(case, dtype, mode, flex_compiled, peak, bw, skip_peers=()) -> dict:
    label, b, h, n, d, bq, bk, sparsity = case
    inputs, peers, lut = _make_peers(case, dtype, flex_compiled)
    n_sel, rho = selected_fraction(n, bk, sparsity)
    row = dict(case=label, B=b, H=h, N=n, d=d, block_q=bq, block_k=bk, sparsity=sparsity, T=n_sel, rho=rho)
    row.update(dtype=str(dtype).replace("torch.", ""), mode=mode, ms={}, graph_ms={}, na={}, peer_s={})
    if mode == "fwd":
        try:
            row["err"] = _errors(inputs, peers, lut, case)
        except Exception:
            traceback.print_exc()
            row["err"] = {}
        from triton.testing import do_bench

        from linzoo.kernels import sla_block_map

        q, k, _ = inputs  # the block map (not in the peers' times): pooling, scores, top-k
        run_map = lambda: sla_block_map(q, k, topk=1.0 - sparsity, block_q=bq, block_k=bk)
        row["map_ms"] = do_bench(run_map, warmup=10, rep=40, return_mode="median")
    for name in PEERS:
        peer = peers.get(name)
        if name in skip_peers:
            row["na"][name] = "skipped (this run)"
            continue
        if isinstance(peer, str):
            row["na"][name] = peer
            continue
        started = time.perf_counter()
        try:
            ms, gms = time_op(peer, inputs, mode, graph_under_ms=3.0 if name in OURS else 0.0, rep=60)
            row["ms"][name] = ms
            if gms is not None:
                row["graph_ms"][name] = gms
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            if name in OURS:
                traceback.print_exc()
            row["na"][name] = f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''})"
        row["peer_s"][name] = round(time.perf_counter() - started, 1)
        torch.cuda.empty_cache()
    add_derived(row, peak, bw)
    print(
        f"{label:24s} {mode:7s} " + " ".join(f"{k}={v:.3f}" for k, v in row["ms"].items())
        + f" floor%={row.get('pct_floor', float('nan')):.0f} err={row.get('err')} wall s: {row['peer_s']}",
        flush=True,
    )  # fmt: skip
    return row


def add_derived(row: dict, peak: float, bw: float) -> None:
    """Dense-equivalent TFLOP/s, the floor and % of it for ``ours`` (in place)."""
    elem = torch.finfo(getattr(torch, row["dtype"])).bits // 8
    flops, moved = work(row["B"], row["H"], row["N"], row["d"], row["rho"], elem, row["mode"])
    row["floor_ms"] = floor_ms(flops, moved, peak, bw)
    if "ours" in row["ms"]:
        t = row["ms"]["ours"]
        row["dense_tflops"] = dense_flops(row["B"], row["H"], row["N"], row["d"], row["mode"]) / (t * 1e-3) / 1e12
        row["pct_floor"] = 100.0 * row["floor_ms"] / t


# --------------------------------------------------------------------------------------------------
# report (CPU-side, tested)
# --------------------------------------------------------------------------------------------------
def _fmt(row: dict, name: str) -> str:
    if name not in row["ms"]:
        return row["na"].get(name, "n/a")
    ms = row["ms"][name]
    g = row["graph_ms"].get(name)
    cell = f"{ms:.3f}" + (f" [{g:.3f} graph]" if g else "")
    base = BASE.get(name)
    if base and base in row["ms"]:
        cell += f" ({ms / row['ms'][base]:.2f}×)"
    return cell


def _bwd_rows(rows: list[dict]) -> list[dict]:
    """Backward-only times (fwd+bwd − fwd) per case and peer where both were measured."""
    out = []
    fwd = {r["case"]: r for r in rows if r["mode"] == "fwd"}
    for r in rows:
        if r["mode"] != "fwd+bwd" or r["case"] not in fwd:
            continue
        f = fwd[r["case"]]["ms"]
        ms = {p: r["ms"][p] - f[p] for p in r["ms"] if p in f}
        row = dict(case=r["case"], ms=ms)
        if "ours" in ms and ms["ours"] > 0:
            row["dense_tflops"] = 2.5 * dense_flops(r["B"], r["H"], r["N"], r["d"], "fwd") / (ms["ours"] * 1e-3) / 1e12
        out.append(row)
    return out


MARKER = generated_marker("sparse_linear_attention.py")


def render(results: dict, out_dirs: list[Path], plot: bool = True) -> None:
    env = results["env"]
    lines = [
        "# Sparse-linear attention (SLA): fused Triton op vs peers",
        "",
        f"Measured by `benchmarks/sparse_linear_attention.py{' --quick' if env.get('quick') else ''}` on {env['gpu']}"
        f" (torch {env['torch']}, triton {env['triton']}), {env['date']}; measured bf16 matmul peak"
        f" {env['peak_tflops']:.0f} TFLOP/s and copy bandwidth {env['bandwidth_gbps']:.0f} GB/s.",
        "",
        "Medians of `triton.testing.do_bench` in ms (L2 flushed); `[… graph]` = CUDA-graph replay. `(n×)` = peer"
        " time / its counterpart (official main, Flex + linear and SDPA vs `ours`; official SLA-1 vs `ours_compl`;"
        " Flex sparse vs `ours_sparse`). Same LUT for every sparse peer; the block map itself is not timed."
        " Dense-eq TFLOP/s = 4·B·H·N²·d / t (fwd), the official benchmark's count; % floor = max(FLOPs/peak,"
        " bytes/bandwidth) of the work actually done over ours' time. err: max|ours − fp32 reference| / max|ref|"
        " (o_s; o_l) on two heads, and peers' o_s vs ours. `block map`: ms of `sla_block_map` (pooling, scores,"
        " top-k), not included in the peers' times.",
        "",
        "| case | B·H·N·d | blocks (T / Nk) | mode | "
        + " | ".join(PEERS)
        + " | block map | dense-eq TFLOP/s | % floor | err |",
        "|---" * (len(PEERS) + 8) + "|",
    ]
    for r in results["rows"]:
        shape = f"{r['B']}·{r['H']}·{r['N']}·{r['d']}"
        blocks = f"{r['block_q']}/{r['block_k']}: {r['T']} ({100 * r['rho']:.1f} %)"
        tf = f"{r['dense_tflops']:.0f}" if "dense_tflops" in r else "-"
        pct = f"{r['pct_floor']:.0f} %" if "pct_floor" in r else "-"
        err = r.get("err") or {}
        err_s = ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in err.items()) or "-"
        cells = " | ".join(_fmt(r, p) for p in PEERS)
        bmap = f"{r['map_ms']:.3f}" if "map_ms" in r else "-"
        lines.append(f"| {r['case']} | {shape} | {blocks} | {r['mode']} | {cells} | {bmap} | {tf} | {pct} | {err_s} |")
    bwd = _bwd_rows(results["rows"])
    if bwd:
        names = [p for p in PEERS if any(p in r["ms"] for r in bwd)]
        lines += ["", "Backward alone (fwd+bwd − fwd), ms; dense-eq TFLOP/s = 2.5 · 4·B·H·N²·d / t:", ""]
        lines.append("| case | " + " | ".join(names) + " | dense-eq TFLOP/s |")
        lines.append("|---" * (len(names) + 2) + "|")
        for r in bwd:
            tf = f"{r['dense_tflops']:.0f}" if "dense_tflops" in r else "-"
            cells = " | ".join(f"{r['ms'][p]:.3f}" if p in r["ms"] else "-" for p in names)
            lines.append(f"| {r['case']} | {cells} | {tf} |")
    ratios = {p: [] for p in BASE}
    for r in results["rows"]:
        for p, base in BASE.items():
            if p in r["ms"] and base in r["ms"]:
                ratios[p].append(r["ms"][p] / r["ms"][base])
    lines += ["", "Geometric mean of peer / counterpart over the rows where both ran:", ""]
    for p, vals in ratios.items():
        if vals:
            gm = math.exp(sum(math.log(x) for x in vals) / len(vals))
            lines.append(
                f"- {p} / {BASE[p]}: {gm:.2f}× over {len(vals)} rows (min {min(vals):.2f}×, max {max(vals):.2f}×)"
            )
    if plot:
        lines += ["", "![dense-equivalent TFLOP/s](sparse_linear_attention.png)"]
    text = "\n".join(lines) + "\n\n" + MARKER
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        md = d / "sparse_linear_attention.md"
        md.write_text(text + (kept_notes(md, MARKER) or "\n"))
        (d / "sparse_linear_attention.json").write_text(json.dumps(results, indent=1))
        if plot:
            _plot(results, d / "sparse_linear_attention.png")


def _plot(results: dict, path: Path) -> None:
    rows = [r for r in results["rows"] if r["mode"] == "fwd" and r["ms"]]
    if not rows:
        return
    plt = pyplot()
    if plt is None:
        return
    names = [p for p in PEERS if any(p in r["ms"] for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(rows)), 4.5))
    width = 0.8 / max(1, len(names))
    for i, p in enumerate(names):
        xs = [j + i * width for j, r in enumerate(rows) if p in r["ms"]]
        ys = [dense_flops(r["B"], r["H"], r["N"], r["d"], "fwd") / (r["ms"][p] * 1e9) for r in rows if p in r["ms"]]
        ax.bar(xs, ys, width, label=p)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r["case"] for r in rows], rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("dense-equivalent TFLOP/s (forward)")
    ax.set_title(f"SLA forward, bf16, {results['env']['gpu']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _indices(spec: str, count: int) -> list[int]:
    """``"0,3,5-7"`` -> [0, 3, 5, 6, 7]; every index must be below ``count``."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise SystemExit(f"--cases: expected indices or ranges like 0,3,5-7, got {spec!r}")
        out += range(int(lo), int(hi or lo) + 1)
    bad = [i for i in out if i >= count]
    if bad:
        raise SystemExit(f"--cases: indices {bad} out of range (there are {count} cases)")
    return out


def _peak_and_bandwidth() -> tuple[float, float]:
    """Measured bf16 matmul FLOP/s (8192³) and copy bandwidth (read + write) in bytes/s."""
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ a, warmup=10, rep=50, return_mode="median")
    peak = 2 * 8192**3 / (ms * 1e-3)
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=10, rep=50, return_mode="median")
    return peak, 2 * x.numel() / (ms * 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--out", type=Path, default=None, help="also write the md/json/png here")
    parser.add_argument("--render", type=Path, default=None, help="re-render md/png from a results JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/benchmarks")
    parser.add_argument("--cases", default=None, help="comma-separated CASES indices or ranges (e.g. 0,2-3)")
    parser.add_argument("--skip-peers", default="", help=f"comma-separated peers not timed (of {', '.join(PEERS)})")
    parser.add_argument("--modes", default="fwd,fwd+bwd", help="comma-separated modes (fwd, fwd+bwd)")
    args = parser.parse_args()
    out_dirs = ([] if args.no_docs else [DOCS]) + ([args.out] if args.out else [])
    skipped = tuple(p for p in args.skip_peers.split(",") if p)
    if not set(skipped) <= set(PEERS):
        parser.error(f"--skip-peers: expected peers among {', '.join(PEERS)}; got {args.skip_peers!r}")
    modes = tuple(m for m in args.modes.split(",") if m)
    if not set(modes) <= {"fwd", "fwd+bwd"}:
        parser.error(f"--modes: expected fwd and/or fwd+bwd, got {args.modes!r}")
    if args.render:
        render(json.loads(args.render.read_text()), out_dirs)
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    import triton
    from torch.nn.attention.flex_attention import flex_attention

    flex_compiled = torch.compile(flex_attention, dynamic=False)
    t0 = time.time()
    peak, bw = _peak_and_bandwidth()
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               python=platform.python_version(), date=time.strftime("%Y-%m-%d"), peak_tflops=peak / 1e12,
               bandwidth_gbps=bw / 1e9, quick=args.quick)  # fmt: skip
    results = dict(env=env, rows=[])
    cases = [c for c in CASES if not args.quick or c[0] in QUICK_CASES]
    if args.cases:
        cases = [cases[i] for i in _indices(args.cases, len(cases))]
    for case in cases:
        for mode in modes:
            results["rows"].append(run_case(case, torch.bfloat16, mode, flex_compiled, peak, bw, skipped))
            render(results, out_dirs)  # after every row: a run cut short keeps what it measured
    env["seconds"] = time.time() - t0
    render(results, out_dirs)
    print(f"done in {env['seconds']:.0f} s")


if __name__ == "__main__":
    main()

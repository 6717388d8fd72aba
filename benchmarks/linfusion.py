"""LinFusion vs softmax (SDPA) self-attention: UNet step time and peak memory against resolution.

Random-init SD-1.5 and SDXL UNets built from their configs (no weights needed): one UNet forward (batch 1, the
text context of 77 tokens, inference mode) at 512, 1024, 2048 and 4096 px with three self-attention variants:
diffusers' default SDPA processor, LinFusion after ``linzoo.diffusion.linearize`` (every self-attention layer),
and the *floor* (every self-attention reduced to its output projection: the time no attention method can beat).
Each is timed eagerly and as a replayed CUDA graph of one forward (GPU time without the host's launch overhead,
which dominates the small resolutions on a slow host CPU). Out-of-memory is recorded as "OOM"; measurements
past ``--time-budget`` are skipped and listed. Tables and JSON are rewritten after every resolution.

    python benchmarks/linfusion.py                      # GPU, writes docs/benchmarks/linfusion.{md,png,json}
    python benchmarks/linfusion.py --out /tmp/bench     # also writes the files there
    python benchmarks/linfusion.py --quick              # fewer resolutions and repetitions
    python benchmarks/linfusion.py --tiny --quick --device cpu --out /tmp/bench   # smoke test (no docs written)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks"

#: the official UNet configs (diffusers ``unet/config.json`` of the base models, architecture fields only)
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "sdxl": {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
    },
}
MID_DIM_SCALE = {"sd15": None, "sdxl": 16}  # official LinFusion projection widths
RESOLUTIONS = {"sd15": [512, 1024, 2048, 4096], "sdxl": [512, 1024, 2048, 4096]}
QUICK_RESOLUTIONS = {"sd15": [512, 2048], "sdxl": [1024, 2048]}
TINY_RESOLUTIONS = {"sd15": [64, 128], "sdxl": [64, 128]}
VARIANTS = ("sdpa", "linfusion", "floor")


def tiny_config(name: str) -> dict[str, Any]:
    """The same block structure with a few channels, for CPU smoke tests."""
    cfg = dict(UNET_CONFIGS[name])
    levels = len(cfg["block_out_channels"])
    cfg.update(block_out_channels=[16, 32, 32, 32][:levels], norm_num_groups=8, layers_per_block=1)
    if name == "sd15":
        cfg.update(cross_attention_dim=16, attention_head_dim=4)
    else:
        cfg.update(
            cross_attention_dim=16,
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 1, 2],
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,
        )
    return cfg


def build_unet(cfg: dict[str, Any], device: torch.device, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel(**cfg)
    return unet.to(dtype).eval().requires_grad_(False)


def unet_inputs(unet, resolution: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    cfg = unet.config
    side = resolution // 8
    kwargs: dict[str, Any] = {
        "sample": torch.randn(batch, cfg.in_channels, side, side, device=device, dtype=dtype),
        "timestep": torch.full((batch,), 500, device=device),
        "encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, device=device, dtype=dtype),
    }
    if cfg.addition_embed_type == "text_time":
        text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=device, dtype=dtype)
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, text_dim, device=device, dtype=dtype),
            "time_ids": time_ids.expand(batch, 6),
        }
    return kwargs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cleanup(device: torch.device, collect: bool = False) -> None:
    """Return cached blocks to the device; ``collect`` also runs the garbage collector (slow with a big UNet on a
    slow host, so only after a failure, whose traceback may hold tensors)."""
    if collect:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class FloorAttnProcessor:
    """The floor: a self-attention layer reduced to its output projection, ``out = to_out(x)``.

    With every ``attn1`` of the UNet set to this, a forward times everything *but* the token mixing of the
    self-attention (and its q/k/v projections): no attention method that keeps the layer's output projection can
    make the UNet step faster. Benchmark-only; it has no use as a model.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if hidden_states.ndim == 4:  # (B, C, H, W) inputs of UNet mid-block attention
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        out = attn.to_out[1](attn.to_out[0](hidden_states))
        if residual.ndim == 4:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out if attn.rescale_output_factor == 1.0 else out / attn.rescale_output_factor


@contextlib.contextmanager
def variant(unet, name: str, model: str) -> Iterator[int]:
    """Install a self-attention variant on ``unet`` for the ``with`` body; yields the number of layers changed."""
    from linzoo.diffusion import linearize, unlinearize
    from linzoo.diffusion.attention import iter_attention_modules

    if name == "sdpa":  # diffusers' default AttnProcessor2_0
        yield 0
    elif name == "linfusion":
        replaced = linearize(unet, mid_dim_scale=MID_DIM_SCALE[model], keep_originals=False).num_replaced
        try:
            yield replaced
        finally:
            unlinearize(unet)
    elif name == "floor":
        saved = {key: attn.processor for key, attn in iter_attention_modules(unet, "self")}
        for _, attn in iter_attention_modules(unet, "self"):
            attn.set_processor(FloorAttnProcessor())
        try:
            yield len(saved)
        finally:
            for key, attn in iter_attention_modules(unet, "self"):
                attn.set_processor(saved[key])
    else:
        raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")


def _reps(first_s: float, reps: int, max_s: float) -> int:
    """Timed repetitions: ``reps``, fewer when they would take more than ``max_s`` seconds (at least one)."""
    return max(1, min(reps, int(max_s / max(first_s, 1e-9))))


def time_eager(unet, inputs: dict[str, Any], device: torch.device, reps: int, max_s: float) -> dict[str, Any]:
    """Median ms of eager forwards after one warm-up, the peak memory (GiB, CUDA only) and the last output."""
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            start = time.perf_counter()
            unet(**inputs)
            _sync(device)
            first = time.perf_counter() - start
            times = []
            for _ in range(_reps(first, reps, max_s)):
                start = time.perf_counter()
                out = unet(**inputs).sample
                _sync(device)
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        entry = {"ms": 1000 * statistics.median(times), "peak_gib": peak, "status": "ok", "reps": len(times)}
        return {**entry, "_output": out}
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err):
            raise
        del err
        _cleanup(device, collect=True)
        return {"ms": None, "peak_gib": None, "status": "OOM"}
    finally:
        _cleanup(device)


def time_graph(
    unet, inputs: dict[str, Any], device: torch.device, reps: int, max_s: float, reference: torch.Tensor | None
) -> dict[str, Any]:
    """Median ms of CUDA-graph replays of one forward captured with static inputs (no host launch overhead).

    One warm-up forward on a side stream (PyTorch's capture recipe), the capture, one untimed replay, then the
    timed replays. ``max_abs_diff`` compares the replayed output with the eager one.
    """
    graph = static = None
    try:
        with torch.inference_mode():
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                unet(**inputs)
            torch.cuda.current_stream(device).wait_stream(stream)
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            graph = torch.cuda.CUDAGraph()
            start = time.perf_counter()
            with torch.cuda.graph(graph):
                static = unet(**inputs).sample
            capture = time.perf_counter() - start
            start = time.perf_counter()
            graph.replay()
            _sync(device)
            first = time.perf_counter() - start
            times = []
            for _ in range(_reps(first, reps, max_s)):
                start = time.perf_counter()
                graph.replay()
                _sync(device)
                times.append(time.perf_counter() - start)
            diff = None if reference is None else (static.float() - reference.float()).abs().max().item()
        return {
            "ms": 1000 * statistics.median(times),
            "capture_ms": 1000 * capture,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "max_abs_diff": diff,
            "status": "ok",
            "reps": len(times),
        }
    except Exception as err:  # a capture failure is recorded, the run goes on with eager numbers
        oom = _is_oom(err)
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        del err, graph, static
        graph = static = None
        _cleanup(device, collect=True)
        return {"ms": None, "status": "OOM"} if oom else {"ms": None, "status": "failed", "reason": reason}
    finally:
        del graph, static
        _cleanup(device)


def _skipped(reason: str) -> dict[str, Any]:
    return {"ms": None, "peak_gib": None, "status": "skipped", "reason": reason}


def run(args: argparse.Namespace, start: float | None = None, on_update=None) -> dict[str, Any]:
    from linzoo.kernels import resolve_backend

    start = time.perf_counter() if start is None else start
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    table = TINY_RESOLUTIONS if args.tiny else QUICK_RESOLUTIONS if args.quick else RESOLUTIONS
    reps = 2 if args.quick else 3
    graphs = device.type == "cuda" and not args.no_graphs
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "batch": args.batch,
        "kernel_backend": resolve_backend("auto", device),
        "tiny": args.tiny,
        "graphs": graphs,
        "graph_max_ms": args.graph_max_ms,
        "time_budget_s": args.time_budget,
        "models": {},
    }
    import diffusers

    results["diffusers"] = diffusers.__version__

    def over_budget() -> bool:
        return bool(args.time_budget) and time.perf_counter() - start > args.time_budget

    for name in args.models:
        cfg = tiny_config(name) if args.tiny else UNET_CONFIGS[name]
        unet = build_unet(cfg, device, dtype)
        rows: list[dict[str, Any]] = []
        results["models"][name] = rows
        for res in args.resolutions or table[name]:
            row: dict[str, Any] = {"resolution": res, "tokens": (res // 8) ** 2}
            inputs = unet_inputs(unet, res, args.batch, device, dtype)
            for var in VARIANTS:
                if over_budget():
                    row[var] = row[f"{var}_graph"] = _skipped(f"time budget of {args.time_budget:g} s spent")
                    continue
                with variant(unet, var, name) as changed:
                    row[var] = time_eager(unet, inputs, device, reps, args.max_measure_s)
                    reference = row[var].pop("_output", None)
                    if var == "linfusion":
                        row["layers_replaced"] = changed
                    if not graphs:
                        row[f"{var}_graph"] = _skipped(
                            "CUDA graphs need a CUDA device" if device.type != "cuda" else "--no-graphs"
                        )
                    elif row[var]["status"] != "ok":
                        row[f"{var}_graph"] = _skipped(f"eager {row[var]['status']}")
                    elif row[var]["ms"] > args.graph_max_ms:
                        row[f"{var}_graph"] = _skipped(f"GPU-bound: eager step > {args.graph_max_ms:g} ms")
                    elif over_budget():
                        row[f"{var}_graph"] = _skipped(f"time budget of {args.time_budget:g} s spent")
                    else:
                        row[f"{var}_graph"] = time_graph(unet, inputs, device, reps, args.max_measure_s, reference)
                    del reference
            del inputs
            _cleanup(device)
            rows.append(row)
            print(
                f"{name} {res:>5}px  "
                + "  ".join(f"{v} {_fmt_ms(row[v])} / {_fmt_ms(row[v + '_graph'])}" for v in VARIANTS),
                flush=True,
            )
            results["wall_s"] = round(time.perf_counter() - start, 1)
            if on_update is not None:
                on_update(results)
        del unet
        _cleanup(device, collect=True)
    return results


def _fmt_ms(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return f"{entry['ms']:.1f} ms"
    return {"OOM": "**OOM**", "skipped": "skipped", "failed": "failed"}[entry["status"]]


def _fmt_mem(entry: dict[str, Any]) -> str:
    if entry["status"] != "ok":
        return _fmt_ms(entry)
    return "n/a" if entry["peak_gib"] is None else f"{entry['peak_gib']:.2f}"


def gpu_ms(row: dict[str, Any], var: str) -> tuple[float | None, bool]:
    """The step time without host launch overhead: the graph replay, or the eager step where that is GPU-bound.

    Returns ``(ms, from_eager)``; ``ms`` is None when neither was measured.
    """
    graph, eager = row[f"{var}_graph"], row[var]
    if graph["status"] == "ok":
        return graph["ms"], False
    if graph["status"] == "skipped" and graph["reason"].startswith("GPU-bound") and eager["status"] == "ok":
        return eager["ms"], True
    return None, False


def _ratio(num: float | None, den: float | None, den_status: str = "ok", mark: bool = False) -> str:
    if num is None:
        return "—"
    if den is None:
        return "SDPA OOM" if den_status == "OOM" else "—"
    return f"{num / den:.2f}×" + ("†" if mark else "")


def _graph_cell(row: dict[str, Any], var: str) -> str:
    ms, from_eager = gpu_ms(row, var)
    if from_eager:
        return "= eager†"
    return _fmt_ms(row[f"{var}_graph"]) if ms is None else f"{ms:.1f} ms"


def _best_ms(row: dict[str, Any], var: str) -> tuple[float | None, bool]:
    """:func:`gpu_ms`, else the eager time (``(ms, True)``) when the graph was not measured."""
    ms, from_eager = gpu_ms(row, var)
    if ms is None and row[var]["status"] == "ok":
        return row[var]["ms"], True
    return ms, from_eager


def _verdict(label: str, rows: list[dict[str, Any]]) -> list[str]:
    """Sentences on the issue's targets, from the launch-free (graph) times where measured."""
    out = []
    for res, target in ((2048, 0.33), (4096, 0.25)):
        row = next((r for r in rows if r["resolution"] == res), None)
        if row is None:
            continue
        (sdpa, e1), (lin, e2), (floor, e3) = (_best_ms(row, var) for var in VARIANTS)
        if lin is None:
            continue
        if sdpa is None:
            out.append(f"- {label} {res}²: SDPA {row['sdpa']['status']}, LinFusion {lin:.1f} ms.")
            continue
        text = f"- {label} {res}²: LinFusion / SDPA = {lin / sdpa:.2f}× (target ≤ {target:.2f}×: "
        text += "met" if lin / sdpa <= target else "not met"
        if floor is not None:
            text += f"); the floor is {floor / sdpa:.2f}× SDPA, LinFusion is {lin / floor:.2f}× the floor"
            if floor / sdpa > target:
                text += ", so no attention method that keeps this UNet could meet the target"
        source = "eager and graph times" if any((e1, e2, e3)) and not all((e1, e2, e3)) else None
        source = "eager times" if all((e1, e2, e3)) else source
        out.append(text + (f"; from {source}" if source else "") + ").")
    return out


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# LinFusion vs SDPA: UNet step time and peak memory",
        "",
        "Generated by `benchmarks/linfusion.py`: one UNet forward of a random-init SD-1.5 / SDXL UNet (official "
        "configs, no weights), batch "
        f"{results['batch']}, 77 text tokens, `torch.inference_mode()`, dtype {results['dtype']}; median of up to "
        "3 timed runs after a warm-up. *SDPA*: diffusers' default `AttnProcessor2_0`; *LinFusion*: after "
        "`linzoo.diffusion.linearize(unet)` (every self-attention layer; SDXL projections at channels/16); "
        "*floor*: every self-attention reduced to its output projection (`out = to_out(x)`, no q/k/v, no token "
        "mixing) — the step time no self-attention method can beat. Peak memory is "
        "`torch.cuda.max_memory_allocated` of the eager forwards (weights included).",
        "",
        "*eager*: the ordinary forward, launched op by op from Python (on a slow host CPU the small resolutions are "
        "launch-bound: the GPU waits for the CPU). *graph*: one forward captured as a CUDA graph with static inputs "
        f"and replayed, i.e. GPU time without launch overhead; skipped (†, the eager time is used) where the eager "
        f"step exceeds {results['graph_max_ms']:g} ms, as it is then GPU-bound.",
        "",
        f"Device: {results['device']} · torch {results['torch']} · diffusers {results['diffusers']} · "
        f"linear-attention kernel backend: `{results['kernel_backend']}`"
        + (" · **tiny configs (smoke test, not representative)**" if results["tiny"] else ""),
        "",
    ]
    notes: list[str] = []
    verdicts: list[str] = []
    for name, rows in results["models"].items():
        label = {"sd15": "SD-1.5", "sdxl": "SDXL"}[name]
        replaced = next((r["layers_replaced"] for r in rows if "layers_replaced" in r), 0)
        lines += [
            f"## {label} UNet ({replaced} self-attention layers replaced)",
            "",
            "| resolution | latent tokens | SDPA eager | SDPA graph | LinFusion eager | LinFusion graph | "
            "floor eager | floor graph | LinFusion / SDPA eager | LinFusion / SDPA graph | floor / SDPA graph |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            sdpa, sdpa_eager = gpu_ms(row, "sdpa")
            lin, lin_eager = gpu_ms(row, "linfusion")
            floor, floor_eager = gpu_ms(row, "floor")
            eager_ratio = _ratio(
                row["linfusion"]["ms"] if row["linfusion"]["status"] == "ok" else None,
                row["sdpa"]["ms"] if row["sdpa"]["status"] == "ok" else None,
                row["sdpa"]["status"],
            )
            lines.append(
                f"| {row['resolution']}² | {row['tokens']:,} | {_fmt_ms(row['sdpa'])} | {_graph_cell(row, 'sdpa')} | "
                f"{_fmt_ms(row['linfusion'])} | {_graph_cell(row, 'linfusion')} | {_fmt_ms(row['floor'])} | "
                f"{_graph_cell(row, 'floor')} | {eager_ratio} | "
                f"{_ratio(lin, sdpa, row['sdpa']['status'], sdpa_eager or lin_eager)} | "
                f"{_ratio(floor, sdpa, row['sdpa']['status'], sdpa_eager or floor_eager)} |"
            )
            for var in VARIANTS:
                for key in (var, f"{var}_graph"):
                    entry = row[key]
                    quiet = ("GPU-bound", "CUDA", "eager", "--no-graphs")  # explained by the table itself
                    if entry["status"] in ("skipped", "failed") and not entry["reason"].startswith(quiet):
                        notes.append(f"- {label} {row['resolution']}² {key}: {entry['status']} ({entry['reason']})")
        lines += [
            "",
            "| resolution | SDPA peak GiB | LinFusion peak GiB | floor peak GiB |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['resolution']}² | {_fmt_mem(r['sdpa'])} | {_fmt_mem(r['linfusion'])} | {_fmt_mem(r['floor'])} |"
            for r in rows
        ]
        lines.append("")
        verdicts += _verdict(label, rows)
    lines += [
        "Targets (issue 11): LinFusion step time ≤ 0.33× SDPA at 2048², and 4096² fits where SDPA does not or "
        "is ≥ 4× slower (≤ 0.25×). Measured against them with the launch-free (graph) times:",
        "",
        *(verdicts or ["- (no 2048² / 4096² rows in this run)"]),
        "",
    ]
    diffs = [
        row[f"{var}_graph"]["max_abs_diff"]
        for rows in results["models"].values()
        for row in rows
        for var in VARIANTS
        if row[f"{var}_graph"].get("max_abs_diff") is not None
    ]
    if diffs:
        lines += [f"Graph replays reproduce the eager outputs: max |Δ| = {max(diffs):.2e} over all graphed rows.", ""]
    if notes:
        lines += ["Not measured in this run:", "", *notes, ""]
    lines += [f"Wall time of the run: {results.get('wall_s', 'n/a')} s.", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(5.5 * (len(names) + 1), 4.2), squeeze=False)
    axes = axes[0]
    colors = {"sdpa": "tab:red", "linfusion": "tab:blue", "floor": "tab:gray"}
    labels = {"sdpa": "SDPA", "linfusion": "LinFusion", "floor": "floor (no self-attn)"}
    for ax, name in zip(axes, names):
        rows = results["models"][name]
        for var in VARIANTS:
            eager = [r for r in rows if r[var]["status"] == "ok"]
            ax.plot(
                [r["resolution"] for r in eager],
                [r[var]["ms"] for r in eager],
                "--",
                marker="o",
                color=colors[var],
                alpha=0.6,
                label=f"{labels[var]} eager",
            )
            gpu = [(r["resolution"], gpu_ms(r, var)[0]) for r in rows if gpu_ms(r, var)[0] is not None]
            if gpu:
                ax.plot(*zip(*gpu), "-", marker="s", color=colors[var], label=f"{labels[var]} graph")
        for r in rows:  # OOM: a cross per variant and one label per resolution
            ooms = [var for var in VARIANTS if r[var]["status"] == "OOM"]
            for var in ooms:
                ax.plot(r["resolution"], 0.98, "x", color=colors[var], transform=ax.get_xaxis_transform())
            if ooms:
                ax.annotate(
                    "\n".join(f"{labels[var]} OOM" for var in ooms),
                    (r["resolution"], 0.95),
                    xycoords=ax.get_xaxis_transform(),
                    rotation=90,
                    va="top",
                    ha="right",
                    fontsize=7,
                    color="tab:red",
                )
        ax.set_title(f"{ {'sd15': 'SD-1.5', 'sdxl': 'SDXL'}[name] } UNet step time (ms)")
    mem_ax = axes[-1]
    for name, style in zip(names, ("-", "--")):
        for var in VARIANTS:
            ok = [r for r in results["models"][name] if r[var]["status"] == "ok" and r[var]["peak_gib"] is not None]
            if ok:
                mem_ax.plot(
                    [r["resolution"] for r in ok],
                    [r[var]["peak_gib"] for r in ok],
                    style,
                    marker="o",
                    color=colors[var],
                    label=f"{name} {labels[var]}",
                )
    mem_ax.set_title("peak memory, eager (GiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("image side (px)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:  # CPU runs have no CUDA memory statistics
            ax.text(0.5, 0.5, "no data (not CUDA)", transform=ax.transAxes, ha="center")
    fig.suptitle(f"LinFusion vs SDPA — {results['device']}, {results['dtype']}, batch {results['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], folder: Path, with_plot: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "linfusion.md").write_text(to_markdown(results))
    (folder / "linfusion.json").write_text(json.dumps(results, indent=2) + "\n")
    if with_plot:
        plot(results, folder / "linfusion.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="also write linfusion.{md,json,png} here")
    parser.add_argument("--quick", action="store_true", help="two resolutions per model, fewer repetitions")
    parser.add_argument("--tiny", action="store_true", help="tiny UNet configs (CPU smoke test; docs not written)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"], choices=sorted(UNET_CONFIGS))
    parser.add_argument("--resolutions", nargs="+", type=int, default=None, help="override the resolution list")
    parser.add_argument(
        "--max-measure-s", type=float, default=3.0, help="seconds of timed repetitions per measurement (at least one)"
    )
    parser.add_argument(
        "--time-budget", type=float, default=130.0, help="seconds from the start; later measurements are skipped"
    )
    parser.add_argument("--no-graphs", action="store_true", help="eager forwards only")
    parser.add_argument(
        "--graph-max-ms", type=float, default=400.0, help="no CUDA-graph replay where the eager step is slower"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks/")
    parser.add_argument(
        "--kernel-backend", default=None, choices=["auto", "triton", "torch"], help="sets LINZOO_KERNEL_BACKEND"
    )
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    if args.resolutions and any(r % 64 for r in args.resolutions):
        parser.error("--resolutions must be multiples of 64 (the UNet downsamples the latent 3 times)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    args = parse_args(argv)
    if args.kernel_backend is not None:
        from linzoo.kernels import ENV_VAR

        os.environ[ENV_VAR] = args.kernel_backend
    folders = ([] if args.no_docs or args.tiny else [DOCS]) + ([args.out] if args.out is not None else [])

    def update(results: dict[str, Any]) -> None:  # tables after every resolution: a run cut short keeps its rows
        for folder in folders:
            write(results, folder, with_plot=False)

    results = run(args, start, on_update=update)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    for folder in folders:
        write(results, folder)
        print(f"wrote {folder / 'linfusion.md'}")
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    main()

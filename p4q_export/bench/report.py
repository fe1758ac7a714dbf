"""Bench reports: a markdown table with speed-up ratios, a plot of latency vs batch with the
bundle's accuracy beside it, and the JSON, written together into one directory."""

from __future__ import annotations

from pathlib import Path

from ..manifest import write_json_atomic

BASELINES = (("ort", "fp32", "× vs ORT FP32"), ("torch", "fp32", "× vs eager"))


def _p50(results: list, backend: str, precision: str, batch: int, ran_on: str | None = None) -> float | None:
    for r in results:
        if r["backend"] == backend and r["precision"] == precision and r["batch"] == batch and r.get("ran_on") == ran_on:
            return r["p50_ms"]
    return None


def speedups(report: dict) -> list[dict]:
    """Each result with p50 ratios against ORT FP32 and PyTorch eager at the same batch on the
    same processor (>1 = faster than the baseline): a GPU row is not credited with a speed-up
    over a CPU row. None where that baseline was not measured."""
    rows = []
    for r in report["results"]:
        row = dict(r)
        for backend, precision, label in BASELINES:
            base = _p50(report["results"], backend, precision, r["batch"], r.get("ran_on"))
            row[label] = round(base / r["p50_ms"], 2) if base and r["p50_ms"] > 0 else None
        rows.append(row)
    return rows


def markdown_table(report: dict) -> str:
    rows = speedups(report)
    power = any(r.get("images_per_joule") for r in rows)
    head = ["backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", BASELINES[0][2], BASELINES[1][2]]
    if power:
        head += ["W", "img/J"]
    head.append("ran on")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)
    for r in rows:
        cells = [r["backend"], r["precision"], str(r["batch"]), fmt(r["p50_ms"], ".2f"), fmt(r["p90_ms"], ".2f"),
                 fmt(r["p99_ms"], ".2f"), fmt(r["throughput_ips"], ".1f"), fmt(r[BASELINES[0][2]], ".2f"),
                 fmt(r[BASELINES[1][2]], ".2f")]
        if power:
            cells += [fmt(r.get("power_w"), ".2f"), fmt(r.get("images_per_joule"), ".2f")]
        cells.append(r.get("ran_on") or "–")
        lines.append("| " + " | ".join(cells) + " |")
    title = f"Bench on {report['device']}"
    cpu = (report.get("machine") or {}).get("cpu") or {}
    if cpu:
        title += f" ({cpu.get('model')}, {cpu.get('available_cores')} cores, VNNI {'yes' if cpu.get('vnni') else 'no'})"
    gpu = (report.get("machine") or {}).get("gpu") or {}
    if gpu.get("name"):
        title += f" + {gpu['name']}"
    if report.get("host"):
        title += f" via {report['host']}"
    out = [f"### {title}", "", *lines, *timing_notes(report)]
    for s in report.get("skipped", []):
        out.append(f"\nskipped {s['backend']}/{s['precision']}: {s['reason']}")
    return "\n".join(out) + "\n"


def timing_notes(report: dict) -> list[str]:
    """How the rows were timed, said once under the table (GPU timing has two honest variants)."""
    rows = report.get("results", [])
    notes = []
    torch_gpu = [r for r in rows if r["backend"] == "torch" and r.get("timer") == "cuda-events"]
    if torch_gpu:
        copy = ("host→device copy of the images and device→host copy of the logits included"
                if any(r.get("includes_copy") for r in torch_gpu) else "input already on the GPU, host↔device copies not timed")
        notes.append(f"\ntorch rows on the GPU: CUDA events around each iteration after {report.get('warmup')} warm-up "
                     f"iterations; {copy}; FP32 with TF32 off.")
    trt = [r for r in rows if r["backend"] == "trt"]
    if trt:
        notes.append("\ntrt rows: device time, CUDA events around the engine's execute_async_v3 alone (input already on "
                     "the GPU); end to end with host↔device copies and the synchronize, p50: "
                     + ", ".join(f"{r['precision']} batch {r['batch']} {r['end_to_end']['p50_ms']} ms" for r in trt if r.get("end_to_end"))
                     + ("; trtexec GPU compute median: " + ", ".join(
                         f"{r['precision']} batch {r['batch']} {r['trtexec']['gpu_compute']['median_ms']} ms"
                         for r in trt if r.get("trtexec", {}).get("gpu_compute")) if any(r.get("trtexec", {}).get("gpu_compute") for r in trt) else "")
                     + ".")
    return notes


def accuracy_items(accuracy) -> list[tuple[str, float]]:
    """Flatten the manifest's accuracy record into (label, top-1) pairs for the plot."""
    items: list[tuple[str, float]] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("top1"), (int, float)):
                items.append((prefix or "top1", float(node["top1"])))
                return
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and "top1" in prefix:
            items.append((prefix.replace(".top1", ""), float(node)))

    walk(accuracy or {}, "")
    return items


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    acc = accuracy_items(report.get("accuracy"))
    fig, axes = plt.subplots(1, 2 if acc else 1, figsize=(11 if acc else 7, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]} if acc else None)
    ax = axes[0][0]
    series: dict = {}
    mixed = len({r.get("ran_on") for r in report["results"]}) > 1
    for r in report["results"]:
        where = f" @{(r.get('ran_on') or '?').split(' ')[0]}" if mixed else ""
        series.setdefault(f"{r['backend']} {r['precision']}{where}", []).append((r["batch"], r["p50_ms"]))
    for label, pts in series.items():
        pts.sort()
        ax.plot([b for b, _ in pts], [t for _, t in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in report["results"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_yscale("log")
    # plain milliseconds at 1-2-5 steps: a log axis inside one decade otherwise has no labels
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (images per call)")
    ax.set_ylabel("p50 latency per call (ms, log scale)")
    cpu = ((report.get("machine") or {}).get("cpu") or {}).get("model")
    ax.set_title(f"latency vs batch on {report['device']}" + (f"\n{cpu}" if cpu and report["device"] == "cpu" else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if acc:
        ax2 = axes[0][1]
        labels, values = zip(*acc)
        values = [100 * v if v <= 1 else v for v in values]  # fractions in the manifest, percent on the plot
        ax2.barh(range(len(values)), values, color="tab:green")
        ax2.set_yticks(range(len(values)), labels, fontsize=8)
        ax2.set_xlabel("top-1 accuracy (%), from the bundle's manifest")
        ax2.set_xlim(0, 100)
        for i, v in enumerate(values):
            ax2.text(v, i, f" {v:.1f}%", va="center", fontsize=8)
        ax2.set_title("accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: Path) -> dict:
    """bench.json, bench.md and bench.png in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "plot": out_dir / "bench.png"}
    write_json_atomic(files["json"], report)
    files["markdown"].write_text(markdown_table(report))
    if report["results"]:
        plot(report, files["plot"])
    else:
        files.pop("plot")
    return {k: str(v) for k, v in files.items()}

"""The benchmark's outputs: a table on stdout, the JSON file, and a PNG plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.stages import BATCH

HEADER = (f"{'variant':<11}{'transport':<10}{'conc':>5}{'req/s':>9}{'p50':>8}{'p90':>8}"
          f"{'p99':>8}{'/inproc':>9}{'/ref':>7}{'srv cpu':>9}{'faults':>8}{'gen cpu':>9}"
          f"{'other':>7}{'err':>5}")


def add_ratios(model: dict[str, Any], reference: str) -> None:
    """Each run's throughput over the in-process limit and over the reference variant's same
    transport and concurrency (None when there is no such run)."""
    limit = model["inprocess_limit"]["throughput"] if model.get("inprocess_limit") else None
    base = {(run["transport"], run["concurrency"]): run["throughput"]
            for run in model["variants"].get(reference, {}).get("runs", [])}
    for variant in model["variants"].values():
        for run in variant["runs"]:
            run["vs_inprocess"] = round(run["throughput"] / limit, 3) if limit else None
            other = base.get((run["transport"], run["concurrency"]))
            run["vs_reference"] = round(run["throughput"] / other, 2) if other else None


def add_latency_overheads(model: dict[str, Any]) -> None:
    """Per variant and transport: p50 at concurrency 1 minus the in-process p50 of one process
    with the same math threads (same predictor settings, no queueing): what serving adds."""
    single = {s["threads"]: s["p50_ms"] for s in model["inprocess"]
              if s["processes"] == 1 and s["batch"] == 1}
    for variant in model["variants"].values():
        threads = int(variant["resolved_runtime"].get("thread_num", 0))
        variant["p50_overhead_ms"] = {
            run["transport"]: round(run["p50_ms"] - single[threads], 2)
            for run in variant["runs"]
            if run["concurrency"] == 1 and run["p50_ms"] is not None and threads in single}


def time_split(variant: dict[str, Any]) -> list[str]:
    """Per run: client p50 against the service's own mean time per request and per stage, and
    the mean images per predictor call (from its /metrics; none for fronts without metrics)."""
    lines = []
    for run in variant["runs"]:
        means = run.get("service_means") or {}
        if not means:
            continue
        inside = means.get("service:" + ("grpc" if run["transport"] == "rpc" else "http"))
        stage_text = ", ".join(f"{key.split(':', 1)[1]} {ms:.1f}" for key, ms in means.items()
                               if key.startswith("stage:"))
        lines.append(f"{run['transport']} c={run['concurrency']}: client p50 "
                     f"{_number(run['p50_ms'], 1)} ms; inside the service (mean) "
                     f"{_number(inside, 1)} ms; stages (mean ms) {stage_text}; images per "
                     f"predictor call {_number(means.get(BATCH), 2)}")
    return lines


def paired_summary(model: dict[str, Any]) -> str | None:
    """The paired rounds (bench_paired) in one line: each round's ratio and their median."""
    paired = model.get("paired")
    if not paired:
        return None
    rounds = paired["rounds"]
    ratios = " ".join(f"{r['ratio']:.2f}" for r in rounds)
    overheads = " ".join(f"{r['p50_overhead_ms']:+.1f}" for r in rounds)
    return (f"paired rounds, project http c={paired['concurrency']} / in-process "
            f"{paired['strategy']}: {ratios} -> median {paired['median_ratio']:.3f} "
            f"(served {min(r['served'] for r in rounds):.1f}-"
            f"{max(r['served'] for r in rounds):.1f} req/s, in-process "
            f"{min(r['inprocess'] for r in rounds):.1f}-{max(r['inprocess'] for r in rounds):.1f}"
            f" img/s; CPU ms per image {_median(rounds, 'inprocess_cpu_ms'):.1f} in process, "
            f"per request {_median(rounds, 'served_cpu_ms'):.1f} served + "
            f"{_median(rounds, 'loadgen_cpu_ms'):.2f} load generator, medians); "
            f"p50 http c=1 - in-process {paired['single']}: {overheads} ms -> median "
            f"{paired['median_p50_overhead_ms']:+.2f} ms; errors "
            f"{sum(r['errors'] for r in rounds)}")


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# Column widths of the text table: variant, transport, then right-aligned figures, errors.
_TEXT_WIDTHS = ("<11", "<10", ">5", ">9", ">8", ">8", ">8", ">9", ">7", ">9", ">8", ">9", ">7",
                ">5")


def _run_cells(run: dict[str, Any]) -> list[str]:
    """One served run's figures, formatted once for both the text and the Markdown table."""
    return [run["transport"], str(run["concurrency"]), f"{run['throughput']:.1f}",
            _number(run["p50_ms"], 1), _number(run["p90_ms"], 1), _number(run["p99_ms"], 1),
            _number(run["vs_inprocess"], 2), _number(run["vs_reference"], 2),
            f"{run['server_cpu_ms_per_request']:.2f}",
            _number(run.get("server_page_faults_per_request"), 0),
            f"{run['loadgen_cpu_ms_per_request']:.2f}",
            f"{run.get('other_cores_busy', 0.0):.2f}"]


def table(results: dict[str, Any]) -> str:
    lines = []
    for name, model in results["models"].items():
        lines.append(f"\n== {name} ==")
        limit = model["inprocess_limit"]
        for strategy in model["inprocess"]:
            best = " <- limit" if limit and strategy["strategy"] == limit["strategy"] else ""
            lines.append(f"in-process {strategy['strategy']:<7} {strategy['throughput']:8.1f} "
                         f"img/s  p50 {strategy['p50_ms']:6.1f}  p99 {strategy['p99_ms']:6.1f} ms"
                         f"  cpu {strategy['cpu_ms_per_image']:5.1f} ms/img  faults "
                         f"{strategy.get('page_faults_per_image', 0):.0f}/img  "
                         f"rss {strategy['rss_mb_per_process']:.0f} MB/process{best}")
        lines.append("times in ms; cpu = CPU ms per request (server / load generator); faults = "
                     "server page faults per request; other = cores busy with other programs "
                     "during the run")
        lines.append(HEADER)
        for variant_name, variant in model["variants"].items():
            for run in variant["runs"]:
                cells = [variant_name, *_run_cells(run), str(run["errors"])]
                lines.append("".join(f"{cell:{width}}" for cell, width
                                     in zip(cells, _TEXT_WIDTHS, strict=True)))
        for variant_name, variant in model["variants"].items():
            lines += [f"time split {variant_name} {line}" for line in time_split(variant)]
        for variant_name, failure in model.get("failed_variants", {}).items():
            lines.append(f"variant {variant_name} FAILED: {failure['error'][:300]}")
        for variant_name, variant in model["variants"].items():
            if variant.get("stopped_answering"):
                lines.append(f"variant {variant_name} STOPPED ANSWERING, later runs missing: "
                             f"{variant['stopped_answering'][:300]}")
        for variant_name, variant in model["variants"].items():
            overheads = ", ".join(f"{transport} {ms:+.1f} ms" for transport, ms
                                  in variant.get("p50_overhead_ms", {}).items())
            if overheads:
                lines.append(f"p50 overhead at concurrency 1, {variant_name} (vs in-process "
                             f"1x{variant['resolved_runtime']['thread_num']}): {overheads}")
        if paired := paired_summary(model):
            lines.append(paired)
        for variant_name, variant in model["variants"].items():
            idle, peak = variant["memory_idle"], variant["memory_peak"]
            lines.append(f"memory {variant_name}: idle RSS {idle['rss_mb']:.0f} MB / PSS "
                         f"{idle['pss_mb']:.0f} MB in {idle['processes']} processes; under load "
                         f"RSS {peak['rss_mb']:.0f} MB / PSS {peak['pss_mb']:.0f} MB")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The same figures as `table`, as Markdown (what docs/benchmarks.md quotes)."""
    lines = []
    for name, model in results["models"].items():
        lines += [f"### {name}", "", "| in-process | img/s | p50 ms | p99 ms | CPU ms/img | "
                                     "page faults/img |", "|---|---:|---:|---:|---:|---:|"]
        limit = model["inprocess_limit"]
        for s in model["inprocess"]:
            mark = " (limit)" if limit and s["strategy"] == limit["strategy"] else ""
            lines.append(f"| {s['strategy']}{mark} | {s['throughput']:.1f} | {s['p50_ms']:.1f} "
                         f"| {s['p99_ms']:.1f} | {s['cpu_ms_per_image']:.1f} "
                         f"| {s.get('page_faults_per_image', 0):.0f} |")
        lines += ["", "| variant | transport | clients | req/s | p50 ms | p90 ms | p99 ms | "
                      "x in-process | x reference | server CPU ms/req | server page faults/req | "
                      "load gen CPU ms/req | other cores busy |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for variant_name, variant in model["variants"].items():
            for run in variant["runs"]:
                lines.append("| " + " | ".join([variant_name, *_run_cells(run)]) + " |")
        lines += ["", "| variant | p50 overhead at 1 client | idle RSS / PSS MB | "
                      "under load RSS / PSS MB | processes |", "|---|---|---|---|---:|"]
        for variant_name, variant in model["variants"].items():
            idle, peak = variant["memory_idle"], variant["memory_peak"]
            overhead = ", ".join(f"{t} {ms:+.1f} ms" for t, ms
                                 in variant.get("p50_overhead_ms", {}).items()) or "-"
            lines.append(f"| {variant_name} | {overhead} | {idle['rss_mb']:.0f} / "
                         f"{idle['pss_mb']:.0f} | {peak['rss_mb']:.0f} / {peak['pss_mb']:.0f} | "
                         f"{idle['processes']} |")
        if paired := paired_summary(model):
            lines += ["", paired[0].upper() + paired[1:] + "."]
        lines.append("")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return path


def plot(results: dict[str, Any], path: Path) -> Path:
    """Per model: throughput and p99 latency against concurrency, one line per variant and
    transport, the in-process limit as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    figure, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for row, (name, model) in enumerate(models.items()):
        speed, tail = axes[row]
        for variant_name, variant in model["variants"].items():
            for transport in sorted({run["transport"] for run in variant["runs"]}):
                runs = sorted((r for r in variant["runs"] if r["transport"] == transport),
                              key=lambda r: r["concurrency"])
                x = [r["concurrency"] for r in runs]
                style = "-o" if variant_name != "reference" else "--s"
                label = f"{variant_name} {transport}"
                speed.plot(x, [r["throughput"] for r in runs], style, label=label, markersize=4)
                tail.plot(x, [r["p99_ms"] for r in runs], style, label=label, markersize=4)
        if model.get("inprocess_limit"):
            limit = model["inprocess_limit"]
            speed.axhline(limit["throughput"], color="black", linestyle=":",
                          label=f"in-process limit ({limit['strategy']})")
        concurrencies = sorted({r["concurrency"] for v in model["variants"].values()
                                for r in v["runs"]})
        for axis, title, unit in ((speed, "throughput", "requests/s"),
                                  (tail, "p99 latency", "ms (log)")):
            axis.set_xscale("log", base=2)
            axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
            axis.set_xlabel("concurrent clients")
            axis.set_ylabel(unit)
            axis.set_title(f"{name}: {title}")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=8)
        tail.set_yscale("log")
        speed.set_ylim(bottom=0)
    figure.suptitle(results["machine"]["summary"], fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

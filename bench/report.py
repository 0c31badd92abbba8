"""The markdown report of a run: medians with min/max per figure, and issue 5's targets as ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# CPU per job (bench.common.CpuSample.per_job_ms), in the drain and steady tables.
_CPU = [
    ("cpu_ms_per_job", "CPU ms/job, machine"),
    ("pg_cpu_ms_per_job", "of it Postgres"),
    ("server_cpu_ms_per_job", "jobwire server"),
]

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "drain": [("jobs_per_s", "jobs/s"), *_CPU],
    "steady": [
        ("jobs_per_s", "jobs/s"),
        ("submit_p50_ms", "submit p50 ms"),
        ("submit_p99_ms", "submit p99 ms"),
        *_CPU,
    ],
    "latency": [
        ("dispatch_p50_ms", "dispatch p50"),
        ("dispatch_p95_ms", "p95"),
        ("dispatch_p99_ms", "p99"),
        ("round_trip_p50_ms", "round trip p50"),
        ("round_trip_p95_ms", "p95"),
        ("round_trip_p99_ms", "p99"),
    ],
    "queue_depth": [
        ("claim_cycle_p50_ms", "claim cycle p50 ms"),
        ("claim_cycle_p95_ms", "p95"),
        ("claim_cycle_p99_ms", "p99"),
    ],
    "fan_in": [
        ("rss_per_worker_kb", "server KB / idle worker"),
        ("server_rss_mb", "server RSS MB"),
        ("dispatch_p50_ms", "dispatch p50 ms"),
        ("dispatch_p99_ms", "p99"),
    ],
    "payload": [("round_trip_ms", "round trip ms")],
    "stream": [
        ("chunks_per_s", "chunks/s"),
        ("chunk_p50_ms", "chunk latency p50 ms"),
        ("chunk_p95_ms", "p95"),
        ("chunk_p99_ms", "p99"),
    ],
}

TITLES = {
    "drain": "Drain: N queued no-op jobs, then the workers start",
    "steady": "Steady: producers and workers together",
    "latency": "Latency: one idle worker, sequential jobs (dispatch = submit -> handler start; "
    "round trip = submit -> result at the client)",
    "queue_depth": "Queue depth: one worker with one slot on a deep queue (claim cycle = gap between "
    "consecutive handler starts: report, claim, hand over)",
    "fan_in": "Fan-in: idle connected workers",
    "payload": "Payload: a 10 MB input and a 10 MB output",
    "stream": "Stream: burst for chunks/s, paced (5 ms apart) for latency (yield -> client has it)",
}


@dataclass(frozen=True)
class Figure:
    median: float
    low: float
    high: float
    n: int

    def cell(self) -> str:
        if self.n == 1:
            return _num(self.median)
        return f"{_num(self.median)} ({_num(self.low)}-{_num(self.high)})"


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Summary:
    scenario: str
    label: str
    procs: str
    figures: dict[str, Figure]
    errors: list[str]


def summarise(rows: list[dict[str, Any]]) -> list[Summary]:
    out: dict[tuple[str, str], Summary] = {}
    for row in rows:
        key = (row["scenario"], row["label"])
        summary = out.setdefault(key, Summary(row["scenario"], row["label"], row["procs"], {}, []))
        if row["error"]:
            summary.errors.append(row["error"])
    for (scenario, label), summary in out.items():
        good = [r for r in rows if (r["scenario"], r["label"]) == (scenario, label) and not r["error"]]
        names = {name for r in good for name in r["metrics"]}
        for name in names:
            values = [float(r["metrics"][name]) for r in good if name in r["metrics"]]
            summary.figures[name] = Figure(statistics.median(values), min(values), max(values), len(values))
    return list(out.values())


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    summaries = summarise(rows)
    lines = [f"# jobwire benchmark, {meta.get('started', '')} ({meta.get('mode')} run)", ""]
    pg = meta.get("postgres", {})
    packages = meta.get("packages", {})
    lines += [
        f"- machine: {meta.get('cpu_count')} cores ({meta.get('cpu_model')}), {meta.get('memory_gb')} GB; "
        f"{meta.get('platform')}",
        f"- Python {meta.get('python')}; jobwire {meta.get('jobwire_source')}; "
        f"Postgres {pg.get('server_version')} "
        f"(fsync={pg.get('fsync')}, synchronous_commit={pg.get('synchronous_commit')}, "
        f"shared_buffers={pg.get('shared_buffers')}); {meta.get('pgbench')}",
        f"- Redis {meta.get('redis')} (appendonly, appendfsync={meta.get('redis_appendfsync')}); "
        + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())),
        f"- every figure: median of {meta.get('sizes', {}).get('repeats')} repeat(s), "
        "(min-max) when more than one; "
        f"run took {meta.get('duration_s', '?')} s",
        "- sizes: " + ", ".join(f"{k}={v}" for k, v in meta.get("sizes", {}).items() if k != "repeats"),
        "",
    ]
    for scenario, columns in COLUMNS.items():
        group = [s for s in summaries if s.scenario == scenario]
        if not group:
            continue
        lines += [f"## {TITLES[scenario]}", ""]
        lines.append("| system | " + " | ".join(title for _, title in columns) + " | processes |")
        lines.append("|---" * (len(columns) + 2) + "|")
        for s in group:
            if s.errors and not s.figures:
                cells = [f"FAILED: {s.errors[0][:160]}"] + [""] * (len(columns) - 1)
            else:
                cells = [s.figures[name].cell() if name in s.figures else "-" for name, _ in columns]
            lines.append(f"| {s.label} | " + " | ".join(cells) + f" | {s.procs} |")
        lines.append("")
    lines += ["## Targets (issue 5), from the medians above", ""]
    lines += ["| target | jobwire | reference | ratio | required | |", "|---|---|---|---|---|---|"]
    for target in targets(summaries):
        lines.append(target)
    errors = [(s.label, s.scenario, e) for s in summaries for e in s.errors]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {scenario} / {label}: {error[:600]}" for label, scenario, error in errors]
    return "\n".join(lines) + "\n"


def _steady_targets(get: Callable[..., float | None], row: Callable[..., None], pgb: float | None) -> None:
    """Both ways of submitting are shown: a call per job (Run), and the calls of the 16 submitters carried
    over one stream (RunStream, through jobwire.client.Submitter)."""
    for way in ("Run", "RunStream"):
        steady = get("steady", f"jobwire (gRPC {way})", "jobs_per_s")
        for name, ref, ref_name, factor in (
            ("Celery+Redis", get("steady", "Celery", "jobs_per_s"), "(Celery)", 3.0),
            ("procrastinate", get("steady", "procrastinate", "jobs_per_s"), "(procrastinate)", 5.0),
            ("pgbench lifecycle", pgb, "(pgbench)", 0.5),
        ):
            row(
                f"steady jobs/s, gRPC {way}, vs {name}",
                steady,
                ref,
                ref_name,
                lambda r, factor=factor: r >= factor,
                f">= {factor:g}x",
            )


def targets(summaries: list[Summary]) -> list[str]:
    def get(scenario: str, label: str, metric: str) -> float | None:
        for s in summaries:
            if s.scenario == scenario and s.label.startswith(label) and metric in s.figures:
                return s.figures[metric].median
        return None

    def best_peer(metric: str) -> tuple[float | None, str]:
        found = [
            (v, name) for name in ("Celery + Redis", "procrastinate") if (v := get("latency", name, metric))
        ]
        return min(found) if found else (None, "-")

    rows: list[str] = []

    def row(
        name: str,
        ours: float | None,
        ref: float | None,
        ref_name: str,
        ok: Callable[[float], bool],
        required: str,
    ) -> None:
        if ours is None or ref is None or ref == 0:
            rows.append(f"| {name} | {_opt(ours)} | {_opt(ref)} {ref_name} | - | {required} | not measured |")
            return
        ratio = ours / ref
        verdict = "PASS" if ok(ratio) else "MISS"
        rows.append(
            f"| {name} | {_num(ours)} | {_num(ref)} {ref_name} | {ratio:.2f} | {required} | {verdict} |"
        )

    pgb = get("steady", "pgbench lifecycle", "jobs_per_s")
    _steady_targets(get, row, pgb)
    row(
        "drain jobs/s vs pgbench lifecycle (unbatched)",
        get("drain", "jobwire", "jobs_per_s"),
        pgb,
        "(pgbench)",
        lambda r: r >= 1,
        ">= 1x",
    )
    for transport in ("REST runsync", "gRPC RunSync"):
        for pct in ("p50", "p99"):
            metric = f"round_trip_{pct}_ms"
            ref, ref_name = best_peer(metric)
            row(
                f"{transport} round trip {pct} ms vs best durable peer",
                get("latency", f"jobwire {transport}", metric),
                ref,
                f"({ref_name})",
                lambda r: r <= 0.5,
                "<= 0.5x",
            )
        dispatch = get("latency", f"jobwire {transport}", "dispatch_p50_ms")
        row(f"{transport} dispatch p50 ms", dispatch, 2.0, "(2 ms)", lambda r: r <= 1, "<= 2 ms")
    depths = sorted(
        (s for s in summaries if s.scenario == "queue_depth" and s.label.startswith("jobwire")),
        key=lambda s: int(s.label.split(", ")[1].split()[0].replace(",", "")),
    )
    if len(depths) >= 2:
        deep, shallow = depths[-1], depths[0]
        metric = "claim_cycle_p50_ms"
        row(
            f"claim cycle p50 ms, {deep.label.split(', ')[1]} vs {shallow.label.split(', ')[1]}",
            deep.figures.get(metric, Figure(0, 0, 0, 0)).median if metric in deep.figures else None,
            shallow.figures[metric].median if metric in shallow.figures else None,
            "(shallow)",
            lambda r: r <= 1.5,
            "<= 1.5x",
        )
    else:
        row("claim cycle p50, deep vs shallow queue", None, None, "", lambda r: True, "<= 1.5x")
    row(
        "server memory per idle worker (KB)",
        get("fan_in", "jobwire", "rss_per_worker_kb"),
        1024.0,
        "(1 MB)",
        lambda r: r <= 1,
        "<= 1 MB",
    )
    row(
        "dispatch p50 ms with the idle workers connected",
        get("fan_in", "jobwire", "dispatch_p50_ms"),
        2.0,
        "(2 ms)",
        lambda r: r <= 1,
        "<= 2 ms",
    )
    alone = get("payload", "Postgres alone", "round_trip_ms")
    for label in ("jobwire REST", "jobwire gRPC"):
        row(
            f"10 MB round trip ms, {label} vs Postgres alone",
            get("payload", label, "round_trip_ms"),
            alone,
            "(Postgres)",
            lambda r: r <= 3,
            "<= 3x",
        )
    return rows


def _opt(value: float | None) -> str:
    return "-" if value is None else _num(value)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report RESULTS.jsonl [OUT.md]`: the markdown of a run, again, from its JSON lines."""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m bench.report RESULTS.jsonl [OUT.md]", file=sys.stderr)
        return 2
    lines = [json.loads(line) for line in Path(args[0]).read_text().splitlines() if line.strip()]
    meta = next((line["meta"] for line in lines if "meta" in line), {})
    for line in lines:
        meta.update(line.get("meta_end", {}))
    rows = [line for line in lines if "meta" not in line and "meta_end" not in line]
    markdown = render(meta, rows)
    if len(args) > 1:
        Path(args[1]).write_text(markdown)
    else:
        print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The results table (printed) and bench/RESULTS.md."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .suite import Results

HEADER = ("Benchmark", "Result", "Target", "")
# The hand-kept log of optimisations, copied into every RESULTS.md.
OPTIMISATIONS = Path(__file__).with_name("OPTIMISATIONS.md")


def _rows(results: Results) -> list[tuple[str, str, str, str]]:
    table = []
    for title, rows in results.rows:
        table.append((f"[{title}]", "", "", ""))
        for row in rows:
            table.append((row.name, row.value, row.target, row.verdict))
    return table


def text_table(results: Results) -> str:
    """One plain-text table for the terminal."""
    table = [HEADER, *_rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("<", "&lt;")


def markdown(results: Results, machine: dict[str, str], command: str, started: datetime.datetime,
             seconds: float) -> str:
    """RESULTS.md: date, machine, the table, verdicts, hot spots, notes."""
    out = [
        "# SSE Commander benchmark results",
        "",
        f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC ({seconds / 60:.1f} min); "
        "every number below, the machine's limits included, comes from that one run. "
        "How each is measured: [README.md](README.md).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {_md(k)} | {_md(v)} |" for k, v in machine.items()],
        f"| CPU busy with other work, sampled between benchmarks | "
        f"{' '.join(f'{b:.0%}' for b in results.background)} |",
        "",
        "## Results",
        "",
        "| Benchmark | Result | Target | |",
        "|---|---|---|---|",
    ]
    for name, value, target, verdict in _rows(results):
        if name.startswith("[") and not value:
            out.append(f"| **{_md(name[1:-1])}** | | | |")
        else:
            out.append(f"| {_md(name)} | {_md(value)} | {_md(target)} | {verdict} |")
    verdicts = [row.verdict for _, rows in results.rows for row in rows if row.verdict in ("PASS", "MISS")]
    out += ["", f"Targets: {verdicts.count('PASS')} pass, {verdicts.count('MISS')} miss."]
    if results.failures:
        out += ["", "**Broken benchmarks:**", "", *[f"- {_md(f)}" for f in results.failures]]
    if results.profiles:
        out += ["", "## Hot spots (py-spy, worker process, separate profiled runs)", ""]
        for name, found in results.profiles.items():
            out += [f"### {name} ({found['samples']} busy samples)", "",
                    "| self % | function | | inclusive % | app/ function |", "|---:|---|---|---:|---|"]
            own, inclusive = found["self"], found["inclusive"]
            for index in range(max(len(own), len(inclusive))):
                a = f"{own[index][1]:.1f} | {_md(own[index][0])}" if index < len(own) else " | "
                b = f"{inclusive[index][1]:.1f} | {_md(inclusive[index][0])}" if index < len(inclusive) else " | "
                out.append(f"| {a} | | {b} |")
            out.append("")
    if results.notes:
        out += ["", "## Notes", "", *[f"- {_md(n)}" for n in results.notes]]
    if OPTIMISATIONS.exists():
        out += ["", OPTIMISATIONS.read_text().rstrip()]
    return "\n".join(out).rstrip() + "\n"


def write_json(results: Results, path: Path) -> None:
    """Every number, for comparing runs."""
    path.write_text(json.dumps({"numbers": results.numbers, "failures": results.failures,
                                "profiles": results.profiles}, indent=2, default=str))

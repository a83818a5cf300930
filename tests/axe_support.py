"""axe-core in the browser tests: the npm package (tests/package.json, installed by `make test` with npm ci).

The script is added with an init script (the DevTools protocol's, which the page's Content-Security-Policy does
not govern), so the pages are checked exactly as served: no policy relaxed, nothing inline added to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"


def load_axe(page) -> None:
    """Make ``window.axe`` available in every document the page loads from now on."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make test` (it runs `npm ci` in tests/)")
    page.add_init_script(path=str(AXE))


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations on the page as it is now, of the given impacts: [{id, impact, nodes: [...]}]."""
    found = page.evaluate(
        """async () => {
            const result = await window.axe.run(document, {resultTypes: ['violations']});
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => [n.target.join(' '), n.failureSummary]),
            }));
        }"""
    )
    return [v for v in found if v["impact"] in impacts]


def summary(violations: list[dict]) -> list[str]:
    """One line per violation: its id, impact, how many nodes, and the first of them."""
    return [f"{v['id']} ({v['impact']}, {len(v['nodes'])} nodes): {v['nodes'][0]}" for v in violations]

"""The page registry: adding a page to the workstation is one module in `ui/pages/` plus one line in `PAGES`.

Each page module is a Streamlit page script that ends with `if __name__ == "__main__": render()`, so it can be
imported by tests without drawing anything. The navigation shows a role only the pages listed for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui.session import ADMIN, ANNOTATOR, RADIOLOGIST, SENIOR, SIGNED_OUT

ANY_SIGNED_IN = "*"  # a `roles` entry meaning every logged-in role, including ones added later
CLINICAL = frozenset({RADIOLOGIST, ADMIN})
EXPERT_READERS = frozenset({ANNOTATOR, SENIOR, ADMIN})
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where app.py lives; page paths are relative to it


@dataclass(frozen=True)
class PageSpec:
    script: str  # path of the page script relative to the project root
    title: str
    icon: str  # ":material/<name>:" (Material Symbols)
    roles: frozenset[str]
    section: str = "Reading"

    def allows(self, role: str) -> bool:
        return role in self.roles or (role != SIGNED_OUT and ANY_SIGNED_IN in self.roles)


PAGES: tuple[PageSpec, ...] = (
    PageSpec("ui/pages/login.py", "Log in", ":material/login:", frozenset({SIGNED_OUT}), "Workstation"),
    PageSpec("ui/pages/analyze.py", "Analyze", ":material/radiology:", CLINICAL),
    PageSpec("ui/pages/history.py", "Case history", ":material/history:", CLINICAL),
    PageSpec("ui/pages/annotation_queue.py", "Annotation queue", ":material/rule:", EXPERT_READERS),
    PageSpec("ui/pages/health.py", "Health", ":material/monitor_heart:", frozenset({ANY_SIGNED_IN}), "Operations"),
    PageSpec(
        "ui/pages/metrics_alerts.py", "Metrics & alerts", ":material/monitoring:", frozenset({ADMIN}), "Operations"
    ),
    PageSpec("ui/pages/audit.py", "Audit", ":material/policy:", frozenset({ADMIN}), "Operations"),
)

# Every role the backend's permission table knows (api/schemas.py `Role`); each must reach at least one page.
KNOWN_ROLES: tuple[str, ...] = (RADIOLOGIST, ANNOTATOR, SENIOR, ADMIN)


def pages_for(role: str, pages: Sequence[PageSpec] = PAGES) -> list[PageSpec]:
    return [page for page in pages if page.allows(role)]


def build_navigation(role: str, pages: Sequence[PageSpec] = PAGES) -> st.Page:
    """`st.navigation` over the role's pages, grouped by section in registry order; returns the page to run."""
    sections: dict[str, list[st.Page]] = {}
    for spec in pages_for(role, pages):
        page = st.Page(PROJECT_ROOT / spec.script, title=spec.title, icon=spec.icon)
        sections.setdefault(spec.section, []).append(page)
    if len(sections) == 1:  # one section heading over everything only adds noise
        return st.navigation(next(iter(sections.values())))
    return st.navigation(sections)

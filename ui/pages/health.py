"""Health: is the backend up and ready, which model serves, how loaded is the machine; refreshes itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import BackendClient, BackendError
from ui.formatting import duration, scalar_items, split_description, split_metrics
from ui.session import client as backend_client
from ui.session import handle_auth_error

REFRESH_SECONDS = 10
MODEL_FIELDS: tuple[tuple[str, str], ...] = (
    ("version", "Version"),
    ("task", "Task"),
    ("architecture", "Architecture"),
    ("input_size", "Input size (px)"),
    ("threshold", "Decision threshold"),
    ("temperature", "Calibration temperature"),
    ("data_fingerprint", "Training data fingerprint"),
)


def fetch(call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any] | None, BackendError | None]:
    try:
        return call(), None
    except BackendError as error:
        handle_auth_error(error)
        return None, error


def render_liveness(client: BackendClient) -> None:
    health, health_error = fetch(client.health)
    ready, ready_error = fetch(client.ready)
    status_col, ready_col, model_col, uptime_col = st.columns(4)
    if health is None:
        status_col.metric("Backend", "unreachable" if health_error and health_error.unreachable else "error")
        st.error(health_error.message if health_error else "No answer.", icon=":material/error:")
        return
    status_col.metric("Backend", str(health.get("status", "?")))
    ready_col.metric("Ready", "yes" if ready and ready.get("ready") else "no")
    model_col.metric("Model loaded", "yes" if health.get("model_loaded") else "no")
    uptime_col.metric("Uptime", duration(health.get("uptime_s")))
    if ready is None:
        st.warning(f"Readiness unknown: {ready_error.message if ready_error else 'no answer'}")
        return
    checks = ready.get("checks") or {}
    rows = [
        {
            "Component": name.replace("_", " "),
            "State": "OK" if (check.get("ok") if isinstance(check, dict) else check) else "FAILING",
            "Detail": str(check.get("detail", "")) if isinstance(check, dict) else "",
        }
        for name, check in checks.items()
    ]
    st.markdown("##### Components")
    st.table(pd.DataFrame(rows).set_index("Component"))  # a static table: long details wrap instead of hiding


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame | None:
    """Model-card metrics: one column per evaluation split (validation, test, ...), one row per metric."""
    splits = {name: split_metrics(values) for name, values in metrics.items() if isinstance(values, dict)}
    splits = {name: cells for name, cells in splits.items() if cells}
    if not splits:
        return None
    rows = list(dict.fromkeys(name for cells in splits.values() for name in cells))
    return pd.DataFrame({split: [cells.get(row, "") for row in rows] for split, cells in splits.items()}, index=rows)


def display_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if key == "data_fingerprint" and len(str(value)) > 16:
        return f"{str(value)[:16]}…"  # enough to compare two cards by eye
    return str(value)


def render_model_card(client: BackendClient) -> None:
    st.markdown("##### Served model")
    info, error = fetch(client.model_info)
    if info is None:
        st.warning(f"Model information unavailable: {error.message if error else 'no answer'}")
        return
    summary = {
        label: display_value(key, info.get(key)) for key, label in MODEL_FIELDS if info.get(key) not in (None, "")
    }
    summary["Classes"] = ", ".join(str(c) for c in info.get("classes") or [])
    left, right = st.columns([1, 1.4])
    left.table(pd.DataFrame({"Value": list(summary.values())}, index=list(summary)))
    metrics = info.get("metrics") or {}
    table = metrics_table(metrics)
    if table is None:
        right.caption("The checkpoint carries no evaluation metrics.")
        return
    right.table(table)
    lines = [split_description(name, split) for name, split in metrics.items() if isinstance(split, dict)]
    right.caption("  \n".join(line for line in lines if line) or "Metrics as recorded in the model checkpoint.")


def render_system(client: BackendClient) -> None:
    st.markdown("##### Machine")
    stats, error = fetch(client.system_stats)
    if stats is None:
        if error and error.route_missing:
            st.info("CPU, memory and disk figures are not available on this backend yet (GET /v1/system/stats).")
        else:
            st.warning(f"System figures unavailable: {error.message if error else 'no answer'}")
        return
    percents = {k: float(v) for k, v in stats.items() if k.endswith("_percent") and isinstance(v, int | float)}
    columns = st.columns(max(len(percents), 1))
    for column, (name, value) in zip(columns, percents.items(), strict=False):
        words = name.removesuffix("_percent").replace("_", " ").capitalize()
        label = " ".join("CPU" if word.lower() == "cpu" else word for word in words.split())  # "Process CPU use"
        column.metric(f"{label} use", f"{value:.0f}%")
        column.progress(min(max(value / 100, 0.0), 1.0))
    others = {k: v for k, v in scalar_items(stats).items() if k not in percents}
    if others:
        st.caption(" · ".join(f"{k.replace('_', ' ')}: {v}" for k, v in others.items()))


def render() -> None:
    st.title("Health")
    auto = st.toggle(f"Refresh every {REFRESH_SECONDS} s", value=True, key="health-auto")

    @st.fragment(run_every=REFRESH_SECONDS if auto else None)
    def live_panel() -> None:
        client = backend_client()
        render_liveness(client)
        render_system(client)
        render_model_card(client)

    live_panel()


if __name__ == "__main__":
    render()

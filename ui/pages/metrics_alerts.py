"""Metrics & alerts (admins): latency percentiles, throughput, error rate, prediction mix and confidence over the last
hour, day or week; input drift; the alerts with their acknowledge buttons and each channel's last delivery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui.client import BackendClient, BackendError
from ui.formatting import percent, short_datetime
from ui.session import client as backend_client
from ui.session import handle_auth_error

WINDOWS = {"Last hour": "1h", "Last 24 hours": "24h", "Last 7 days": "7d"}


def fetch(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return call()
    except BackendError as error:
        handle_auth_error(error)
        st.warning(error.message, icon=":material/warning:")
        return None


def milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def series_frame(summary: dict[str, Any]) -> pd.DataFrame:
    rows = [{"start": pd.Timestamp(point["start"]), **point["figures"]} for point in summary.get("series", [])]
    return pd.DataFrame(rows)


def line_chart(frame: pd.DataFrame, columns: dict[str, str], title: str, unit: str) -> go.Figure:
    figure = go.Figure([go.Scatter(x=frame["start"], y=frame[col], name=name, mode="lines+markers")
                        for col, name in columns.items()])  # fmt: skip
    figure.update_layout(title=title, yaxis_title=unit, height=280, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def mix_chart(frame: pd.DataFrame) -> go.Figure:
    labels = sorted({label for mix in frame["prediction_mix"] for label in mix})
    bars = [go.Bar(x=frame["start"], y=[mix.get(label, 0) for mix in frame["prediction_mix"]], name=label)
            for label in labels]  # fmt: skip
    figure = go.Figure(bars)
    figure.update_layout(barmode="stack", title="Predictions by class", height=280,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})  # fmt: skip
    return figure


def render_summary(client: BackendClient, window: str) -> None:
    summary = fetch(lambda: client.monitoring_summary(window))
    if summary is None:
        return
    totals = summary["totals"]
    cells = st.columns(4)
    p50, p95 = totals["p50_ms"], totals["p95_ms"]  # one unit for the pair: "111 / 336 ms" fits a quarter row
    cells[0].metric("p50 / p95 latency", "–" if p50 is None else f"{p50:,.0f} / {milliseconds(p95)}")
    cells[1].metric("Throughput", f"{summary['throughput_per_min']:.2f} / min")
    cells[2].metric("Error rate (5xx)", percent(totals["error_rate"], 1) if totals["error_rate"] is not None else "–")
    cells[3].metric(
        "Predictions", f"{totals['predictions']}", help="Share uncertain: " + percent(totals["uncertain_share"])
    )
    frame = series_frame(summary)
    if frame.empty or not frame["requests"].any():
        st.info("No requests in this window yet.")
        return
    left, right = st.columns(2)
    left.plotly_chart(line_chart(frame, {"p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99"}, "Latency", "ms"))
    right.plotly_chart(line_chart(frame, {"requests": "requests"}, "Throughput", "requests per bucket"))
    left.plotly_chart(line_chart(frame, {"error_rate": "5xx share"}, "Error rate", "share"))
    right.plotly_chart(mix_chart(frame))
    left.plotly_chart(line_chart(frame, {"mean_confidence": "mean confidence", "uncertain_share": "uncertain"},
                                 "Confidence", "share"))  # fmt: skip


def render_drift(client: BackendClient) -> None:
    st.markdown("##### Input drift")
    drift = fetch(client.drift)
    if drift is None:
        return
    if drift["detected"] is None:
        st.info(drift["reason"])
        return
    (st.error if drift["detected"] else st.success)(drift["reason"])
    rows = [{"Statistic": t["feature"], "Test": t["test"], "p-value": f"{t['p_value']:.2e}",
             "PSI": "" if t["psi"] is None else f"{t['psi']:.3f}", "Drift": "yes" if t["drifted"] else ""}
            for t in drift["tests"]]  # fmt: skip
    # every test in view (the embedding test is the last row): rows of 35 px plus the header
    st.dataframe(pd.DataFrame(rows), hide_index=True, height=35 * (len(rows) + 1) + 3)


def render_alerts(client: BackendClient) -> None:
    st.markdown("##### Alerts")
    listing = fetch(client.alerts)
    if listing is None:
        return
    alerts = listing["alerts"]
    if not alerts:
        st.success("No alerts.")
    for alert in alerts:
        icon = {"firing": ":material/notifications_active:", "acknowledged": ":material/done:"}.get(alert["state"], "")
        line, action = st.columns([5, 1])
        seen = f", acknowledged by {alert['acknowledged_by']}" if alert["acknowledged_by"] else ""
        line.markdown(f"{icon} **{alert['rule']}** ({alert['severity']}, {alert['state']}) — {alert['message']}  \n"
                      f"since {short_datetime(alert['fired_at'])}{seen}")  # fmt: skip
        if alert["state"] == "firing" and action.button("Acknowledge", key=f"ack-{alert['id']}"):
            fetch(lambda alert_id=alert["id"]: client.acknowledge_alert(alert_id))
            st.rerun()
    for channel in listing["channels"]:
        (st.caption if channel["ok"] else st.error)(f"Channel {channel['channel']}: {channel['detail']}")


def render() -> None:
    st.title("Metrics & alerts")
    client = backend_client()
    window = WINDOWS[st.radio("Window", list(WINDOWS), horizontal=True, key="metrics-window")]
    render_alerts(client)
    render_summary(client, window)
    render_drift(client)


if __name__ == "__main__":
    render()

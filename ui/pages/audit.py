"""Audit (admins): who did what to which case, filtered by user, patient, action and dates; verify the hash chain;
export the filtered events as CSV or as a PDF."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import BackendClient, BackendError
from ui.formatting import short_datetime
from ui.session import client as backend_client
from ui.session import handle_auth_error

ACTIONS = ("", "login", "login.failed", "login.throttled", "login.lockout", "access.denied", "prediction",
           "case.list", "case.view", "report.download", "audit.export", "queue.add", "queue.claim", "queue.release",
           "annotation.submit", "annotation.adjudicate", "annotations.export", "retraining.start", "retraining",
           "model.promote", "model.rollback")  # fmt: skip
EXPORTS = {"csv": ("CSV", "text/csv"), "pdf": ("PDF", "application/pdf")}


def chosen_filters() -> dict[str, str | None]:
    user, patient, action, days = st.columns([1, 1, 1, 1.4])
    picked = days.date_input("Dates", value=(), key="audit-dates")
    chosen = [day for day in (picked if isinstance(picked, list | tuple) else [picked]) if isinstance(day, date)]
    return {
        "user": user.text_input("User", key="audit-user").strip() or None,
        "patient_id": patient.text_input("Patient ID", key="audit-patient").strip() or None,
        "action": action.selectbox("Action", ACTIONS, key="audit-action") or None,
        "date_from": chosen[0].isoformat() if chosen else None,
        "date_to": chosen[-1].isoformat() if chosen else None,
    }


def events_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"#": e["id"], "When": short_datetime(e["at"]), "Action": e["action"],
                          "Outcome": e["outcome"], "User": e["actor_name"] or "", "Role": e["actor_role"] or "",
                          "From": e["client"] or "", "Case": e["target_id"] or "", "Model": e["model_version"] or "",
                          "Detail": ", ".join(f"{k}: {v}" for k, v in e["detail"].items())}
                         for e in items])  # fmt: skip


def render_verify(client: BackendClient) -> None:
    if not st.button("Verify the chain", icon=":material/verified:"):
        return
    result = client.audit_verify()
    if result["intact"]:
        st.success(f"Chain intact: {result['records']} records; head {result['head_hash'][:16]}…")
    else:
        st.error(f"The audit trail was tampered with: {result['problem']}.")


def render_export(client: BackendClient, filters: dict[str, str | None]) -> None:
    """Fetched on request only: an export is itself an audited action. CSV keeps the hashes (a copy can be
    re-verified); the PDF is for print, with the chain's verdict and head hash on its first page."""
    columns = st.columns([1] * len(EXPORTS) + [2])[: len(EXPORTS)]  # side by side at the left
    for column, (kind, (label, mime)) in zip(columns, EXPORTS.items(), strict=True):
        if column.button(f"Export these events as {label}", icon=":material/download:", key=f"audit-export-{kind}"):
            data = client.audit_export(kind, **filters)
            column.download_button(f"Download audit.{kind}", data, file_name=f"audit.{kind}", mime=mime)


def render() -> None:
    st.title("Audit")
    client = backend_client()
    filters = chosen_filters()
    try:
        page = client.audit_events(**filters, limit=200)
        render_verify(client)
        render_export(client, filters)
    except BackendError as error:
        handle_auth_error(error)
        st.error(error.message)
        return
    if not page["items"]:
        st.info("No audit events match these filters.")
        return
    st.caption(f"The {len(page['items'])} newest matching events.")
    st.dataframe(events_frame(page["items"]), hide_index=True)


if __name__ == "__main__":
    render()

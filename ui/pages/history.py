"""Case history: find earlier cases by patient, date range and finding, and reopen one with its full result."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import pandas as pd
import streamlit as st

from ui.case_view import render_case
from ui.client import BackendClient, BackendError
from ui.formatting import finding_text, short_datetime
from ui.nodules import nodule_cell
from ui.session import client as backend_client
from ui.session import handle_auth_error

PAGE_SIZE = 20
FILTERS_KEY = "history-filters"
OFFSET_KEY = "history-offset"
CLASSES_KEY = "history-classes"
ANY_FINDING = "Any finding"


def known_findings(client: BackendClient) -> list[str]:
    """The model's class names, for the finding filter (asked once per session)."""
    if CLASSES_KEY not in st.session_state:
        try:
            st.session_state[CLASSES_KEY] = [str(name) for name in client.model_info().get("classes", [])]
        except BackendError as error:
            handle_auth_error(error)
            st.session_state[CLASSES_KEY] = []
    return st.session_state[CLASSES_KEY]


def date_filters(chosen: Any) -> dict[str, str]:
    """`st.date_input` range value (0, 1 or 2 dates) -> `date_from`/`date_to` query parameters."""
    days = [day for day in (chosen if isinstance(chosen, list | tuple) else [chosen]) if isinstance(day, date)]
    filters = {}
    if days:
        filters["date_from"] = days[0].isoformat()
        filters["date_to"] = days[-1].isoformat()
    return filters


def render_filters(client: BackendClient) -> dict[str, str]:
    findings = known_findings(client)
    with st.form("history-search", border=False):
        id_col, finding_col, date_col, button_col = st.columns([1.2, 1, 1.3, 0.6], vertical_alignment="bottom")
        patient_id = id_col.text_input("Patient ID", placeholder="exact patient ID")
        finding = finding_col.selectbox("Finding", [ANY_FINDING, *findings]) if findings else None
        if not findings:
            finding = finding_col.text_input("Finding", placeholder="e.g. PNEUMONIA")
        days = date_col.date_input("Date range", value=(), format="YYYY-MM-DD")
        searched = button_col.form_submit_button("Search", icon=":material/search:", width="stretch")
    if searched:
        filters = {"patient_id": patient_id.strip(), **date_filters(days)}
        if finding and finding != ANY_FINDING:
            filters["prediction"] = finding.strip()
        st.session_state[FILTERS_KEY] = {k: v for k, v in filters.items() if v}
        st.session_state[OFFSET_KEY] = 0
    return st.session_state.get(FILTERS_KEY, {})


def cases_table(items: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for case in items:
        patient = case.get("patient") or {}
        flags = [label for flag, label in (("ood", "outside domain"), ("uncertain", "uncertain")) if case.get(flag)]
        rows.append(
            {
                "Date": short_datetime(case.get("created_at")),
                "Patient ID": patient.get("patient_id") or "",
                "Name": patient.get("name") or "",
                "Finding": finding_text(case),
                "Nodule or mass": nodule_cell(case),
                "Confidence": float(case.get("confidence") or 0.0),
                "Flags": ", ".join(flags),
                "Status": str(case.get("status") or "").replace("_", " "),
                "Case": str(case.get("case_id", ""))[:8],  # enough to tell cases apart; the full id is in the view
            }
        )
    return pd.DataFrame(rows)


def render_pager(total: int, offset: int) -> None:
    first, last = offset + 1, min(offset + PAGE_SIZE, total)
    info_col, prev_col, next_col = st.columns([4, 1, 1], vertical_alignment="center")
    info_col.caption(f"Cases {first}–{last} of {total}")
    if prev_col.button("Previous", disabled=offset == 0, width="stretch", icon=":material/chevron_left:"):
        st.session_state[OFFSET_KEY] = max(0, offset - PAGE_SIZE)
        st.rerun()
    if next_col.button("Next", disabled=last >= total, width="stretch", icon=":material/chevron_right:"):
        st.session_state[OFFSET_KEY] = offset + PAGE_SIZE
        st.rerun()


def render_results(items: list[dict[str, Any]], filters: dict[str, str], offset: int) -> str | None:
    """The result table; returns the case id the user selected (also written to the URL as ?case=)."""
    query_key = hashlib.sha1(json.dumps([filters, offset], sort_keys=True).encode()).hexdigest()[:10]
    event = st.dataframe(
        cases_table(items),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"history-table-{query_key}",  # a new query starts without a stale row selected
        column_config={
            "Confidence": st.column_config.ProgressColumn("Confidence", format="percent", min_value=0, max_value=1),
            "Case": st.column_config.TextColumn("Case", width="small"),
        },
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        case_id = str(items[rows[0]]["case_id"])
        st.query_params["case"] = case_id
        return case_id
    return None


def render_case_by_id(client: BackendClient, case_id: str) -> None:
    try:
        case = client.get_case(case_id)
    except BackendError as error:
        handle_auth_error(error)
        st.error(f"Case {case_id} cannot be opened: {error.message}", icon=":material/error:")
        return
    st.divider()
    patient = case.get("patient") or {}
    who = " · ".join(str(v) for v in (patient.get("patient_id"), patient.get("name")) if v)
    st.subheader(f"Case from {short_datetime(case.get('created_at'))}" + (f" · {who}" if who else ""))
    render_case(client, case, key="history")


def render() -> None:
    st.title("Case history")
    client = backend_client()
    filters = render_filters(client)
    offset = int(st.session_state.get(OFFSET_KEY, 0))
    try:
        page = client.list_cases(limit=PAGE_SIZE, offset=offset, **filters)
    except BackendError as error:
        handle_auth_error(error)
        if error.route_missing:
            st.info("This backend cannot list cases yet (GET /v1/cases is missing).", icon=":material/info:")
        else:
            st.error(f"Search failed: {error.message}", icon=":material/error:")
        return
    items = [item for item in page.get("items") or [] if isinstance(item, dict) and item.get("case_id")]
    total = int(page.get("total") or len(items))
    if not items:
        st.info("No cases match these filters." if filters else "No cases yet: analyse a study first.")
        selected = None
    else:
        st.caption("Select a row to reopen the case.")
        selected = render_results(items, filters, offset)
        render_pager(total, offset)
    case_id = selected or st.query_params.get("case")
    if case_id:
        render_case_by_id(client, str(case_id))


if __name__ == "__main__":
    render()

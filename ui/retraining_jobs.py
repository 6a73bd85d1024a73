"""Retraining jobs, for admins: start one by hand, follow each job to promoted, rejected (with the reason) or failed
(with the error), and compare champion and challenger. Drawn on the annotation queue page for now; a Models page
can call `render_retraining_jobs` as it is."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui.client import BackendClient, BackendError
from ui.formatting import comparison_rows, flat_metrics, is_comparison, job_outcome, job_row
from ui.session import handle_auth_error

ACTIVE_STATES = frozenset({"queued", "running"})
JOB_NOTICE_KEY = "retraining-notice"


def start_job(client: BackendClient, reason: str) -> None:
    try:
        job = client.start_retraining(reason.strip() or None)
        st.session_state[JOB_NOTICE_KEY] = ("success", f"Retraining job {job['id'][:8]} is {job['state']}.")
    except BackendError as error:
        handle_auth_error(error)
        st.session_state[JOB_NOTICE_KEY] = ("warning", error.message)  # 409: another job is still active


def render_start(client: BackendClient, jobs: list[dict[str, Any]]) -> None:
    active = next((job for job in jobs if job.get("state") in ACTIVE_STATES), None)
    reason_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    reason = reason_col.text_input("Reason (optional)", key="retraining-reason", max_chars=500,
                                   placeholder="e.g. 40 new adjudicated labels from the paediatric ward")  # fmt: skip
    clicked = button_col.button(
        "Start retraining",
        icon=":material/model_training:",
        key="retraining-start",
        disabled=active is not None,
        help=f"Job {active['id'][:8]} is still {active['state']}." if active else None,
    )
    if clicked:
        start_job(client, reason)
        st.rerun()


def render_job_detail(job: dict[str, Any]) -> None:
    outcome = job_outcome(job)
    st.markdown(f"**Job {job['id'][:8]}** · {job['state']}" + (f" · {outcome}" if outcome != job["state"] else ""))
    if job.get("champion_version"):
        st.markdown(f"Champion `{job['champion_version']}` · challenger `{job.get('challenger_version') or '–'}`")
    steps = (job.get("progress") or {}).get("steps_done") or []
    if steps:
        st.caption("Steps done: " + " → ".join(str(step).replace("_", " ") for step in steps))
    metrics = job.get("metrics") or {}
    compared = comparison_rows(metrics)
    if compared:
        st.dataframe(pd.DataFrame(compared), hide_index=True)
    others = flat_metrics({name: part for name, part in metrics.items() if not is_comparison(part)})
    if others:
        st.caption(" · ".join(f"{name}: {value}" for name, value in others.items()))
    if job.get("mlflow_run_id"):
        st.caption(f"MLflow run {job['mlflow_run_id']}")


def render_retraining_jobs(client: BackendClient) -> None:
    st.markdown("##### Retraining jobs")
    severity, message = st.session_state.pop(JOB_NOTICE_KEY, (None, None))
    if message:
        (st.success if severity == "success" else st.warning)(message)
    try:
        listing = client.retraining_jobs()
    except BackendError as error:
        handle_auth_error(error)
        st.error(error.message)
        return
    jobs = listing["jobs"]
    render_start(client, jobs)
    if not jobs:
        st.info("No retraining job yet. One starts by itself once enough new final expert labels exist "
                "(RETRAIN_MIN_NEW_LABELS), or start one here.")  # fmt: skip
        return
    if listing["total"] > len(jobs):
        st.caption(f"The newest {len(jobs)} of {listing['total']} jobs.")
    st.dataframe(pd.DataFrame([job_row(job) for job in jobs]), hide_index=True)
    by_id = {job["id"]: job for job in jobs}
    chosen = st.selectbox("Job details", list(by_id), key="retraining-job", format_func=lambda job_id: job_id[:8])
    render_job_detail(by_id[chosen])  # the same snapshot as the table, so the two never disagree
    if st.button("Refresh", icon=":material/refresh:", key="retraining-refresh", help="Jobs move on by themselves"):
        st.rerun()

"""Analyze: upload a radiograph, check the patient data (prefilled from DICOM tags), run the AI, read the result."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from settings import get_settings
from ui.case_data import CACHE_KEY, cached_artifacts
from ui.case_view import render_case
from ui.client import BackendClient, BackendError
from ui.formatting import SEX_LABELS, dicom_date, patient_from_tags, patient_payload
from ui.imagery import ImageDataError, png_from_base64
from ui.session import client as backend_client
from ui.session import handle_auth_error

UPLOAD_TYPES: list[str] = ["dcm", "dicom", "png", "jpg", "jpeg", "tif", "tiff"]
BROWSER_PREVIEWABLE: tuple[str, ...] = (".png", ".jpg", ".jpeg")
FORM_KEYS: dict[str, str] = {
    "patient_id": "analyze-patient_id",
    "name": "analyze-name",
    "age": "analyze-age",
    "sex": "analyze-sex",
    "clinical_history": "analyze-clinical_history",
}
FIELD_LABELS: dict[str, str] = {
    "patient_id": "patient ID",
    "name": "name",
    "age": "age",
    "sex": "sex",
    "clinical_history": "clinical history",
}
FORM_DEFAULTS: dict[str, Any] = {"patient_id": "", "name": "", "age": None, "sex": "", "clinical_history": ""}
UPLOAD_STATE_KEY = "analyze-upload-state"
CURRENT_CASE_KEY = "analyze-case-id"
TIMING_KEY = "analyze-timing"
RUN_KEY = "analyze-run"  # the "Run AI analysis" button: True in the run its click starts
UPLOAD_KEY = "analyze-upload"
PREVIEW_WIDTH = 380
SHOWN_TAGS: tuple[tuple[str, str], ...] = (
    ("Modality", "Modality"),
    ("ViewPosition", "View"),
    ("BodyPartExamined", "Body part"),
    ("StudyDate", "Study date"),
    ("Manufacturer", "Manufacturer"),
)


@dataclass
class UploadState:
    """What the workstation learned about the current upload (once per file, not once per rerun)."""

    file_id: str
    name: str
    upload_id: str | None = None  # the backend holds the inspected bytes under this id: the study names it
    preview: bytes | None = None
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    prefilled: list[str] = field(default_factory=list)
    note: str | None = None  # why there is no preview or no prefill
    error: str | None = None  # the backend refused the file: shown next to the upload


def inspect_upload(client: BackendClient, uploaded: UploadedFile) -> UploadState:
    state = UploadState(file_id=uploaded.file_id, name=uploaded.name)
    try:
        answer = client.inspect(uploaded.name, uploaded.getvalue())
    except BackendError as error:
        handle_auth_error(error)
        if error.file_rejected:
            state.error = error.message
            return state
        if uploaded.name.lower().endswith(BROWSER_PREVIEWABLE):
            state.preview = uploaded.getvalue()
        if error.route_missing:
            state.note = "No DICOM preview or tag prefill: this backend has no inspect endpoint yet."
        else:
            state.note = f"No DICOM preview or tag prefill ({error.message}). The analysis may still work."
        return state
    try:
        state.preview = png_from_base64(str(answer.get("preview_png_base64") or "")) or None
    except ImageDataError as error:
        state.note = str(error)
    state.upload_id = str(answer["upload_id"]) if answer.get("upload_id") else None
    state.tags = {str(k): v for k, v in (answer.get("metadata") or {}).items()}
    state.description = f"{str(answer.get('format', '')).upper()} · {answer.get('width')} × {answer.get('height')} px"
    return state


def reset_form(prefill: dict[str, Any]) -> None:
    """A new file means a new patient: clear every field, then fill what the DICOM tags say."""
    for name, widget_key in FORM_KEYS.items():
        st.session_state[widget_key] = prefill.get(name, FORM_DEFAULTS[name])


def track_upload(client: BackendClient, uploaded: UploadedFile | None) -> UploadState | None:
    state: UploadState | None = st.session_state.get(UPLOAD_STATE_KEY)
    if uploaded is None:
        st.session_state.pop(UPLOAD_STATE_KEY, None)
        return None
    if state is None or state.file_id != uploaded.file_id:
        with st.spinner("Reading the file…"):
            state = inspect_upload(client, uploaded)
        prefill = patient_from_tags(state.tags)
        state.prefilled = list(prefill)
        reset_form(prefill)
        st.session_state.pop(CURRENT_CASE_KEY, None)  # the old result belongs to the old file
        st.session_state[UPLOAD_STATE_KEY] = state
    return state


def tag_line(tags: dict[str, Any]) -> str:
    parts = []
    for tag, label in SHOWN_TAGS:
        value = tags.get(tag)
        if value in (None, ""):
            continue
        if tag == "StudyDate" and (day := dicom_date(value)):
            value = day.isoformat()
        parts.append(f"{label}: {value}")
    return " · ".join(parts)


def render_upload_panel(client: BackendClient) -> tuple[UploadedFile | None, UploadState | None]:
    uploaded = st.file_uploader(
        "Radiograph (DICOM, PNG, JPEG or TIFF)",
        type=UPLOAD_TYPES,
        key=UPLOAD_KEY,
        max_upload_size=max(1, math.ceil(get_settings().max_upload_mb)),
    )
    state = track_upload(client, uploaded)
    if state is None:
        st.caption("Drop a file to see a preview; DICOM files also fill in the patient form.")
        return uploaded, None
    if state.error:
        st.error(f"The backend cannot use this file: {state.error}", icon=":material/error:")
    if state.preview:
        st.image(state.preview, caption=state.description or state.name, width=PREVIEW_WIDTH)
    if line := tag_line(state.tags):
        st.caption(line)
    if state.note:
        st.caption(state.note)
    return uploaded, state


def render_patient_form(state: UploadState | None, can_run: bool) -> bool:
    for name, widget_key in FORM_KEYS.items():
        st.session_state.setdefault(widget_key, FORM_DEFAULTS[name])
    with st.form("analyze-patient", border=True):
        st.markdown("**Patient**")
        if state and state.prefilled:
            filled = ", ".join(FIELD_LABELS[name] for name in state.prefilled)
            st.caption(f"Filled in from the DICOM tags ({filled}): check before running.")
        id_col, name_col = st.columns(2)
        id_col.text_input("Patient ID", key=FORM_KEYS["patient_id"], max_chars=64)
        name_col.text_input("Name", key=FORM_KEYS["name"], max_chars=200)
        age_col, sex_col = st.columns(2)
        age_col.number_input("Age (years)", min_value=0, max_value=130, step=1, key=FORM_KEYS["age"])
        sex_col.selectbox(
            "Sex",
            options=["", *SEX_LABELS],
            format_func=lambda code: SEX_LABELS.get(code, "Not given"),
            key=FORM_KEYS["sex"],
        )
        st.text_area(
            "Clinical history",
            key=FORM_KEYS["clinical_history"],
            height=90,
            placeholder="e.g. fever and cough for 3 days",
        )
        return st.form_submit_button(
            "Run AI analysis",
            type="primary",
            icon=":material/neurology:",
            disabled=not can_run,
            width="stretch",
            key=RUN_KEY,
        )


def run_analysis(client: BackendClient, uploaded: UploadedFile) -> str | None:
    """POST the study and fetch everything the result view shows; returns an error message or None."""
    form = {name: st.session_state.get(widget_key) for name, widget_key in FORM_KEYS.items()}
    started = time.perf_counter()
    with st.spinner("Running AI analysis…"):
        try:
            state: UploadState | None = st.session_state.get(UPLOAD_STATE_KEY)
            upload_id = state.upload_id if state and state.file_id == uploaded.file_id else None
            case = client.create_study(uploaded.name, uploaded.getvalue(), patient_payload(form), upload_id)
            cached_artifacts(st.session_state, client, case, refresh=True)
        except BackendError as error:
            handle_auth_error(error)
            return error.message
    st.session_state[CURRENT_CASE_KEY] = str(case["case_id"])
    st.session_state[TIMING_KEY] = time.perf_counter() - started
    return None


def current_case() -> dict[str, Any] | None:
    case_id = st.session_state.get(CURRENT_CASE_KEY)
    artifacts = st.session_state.get(CACHE_KEY, {}).get(case_id) if case_id else None
    return artifacts.case if artifacts else None


def study_summary(case: dict[str, Any], state: UploadState | None) -> str:
    patient = case.get("patient") or {}
    parts = [f"**{state.name}**" if state else "", state.description if state else ""]
    parts += [
        f"Patient ID {patient['patient_id']}" if patient.get("patient_id") else "",
        str(patient.get("name") or ""),
    ]
    parts += [f"{patient['age']} y" if patient.get("age") is not None else "", SEX_LABELS.get(patient.get("sex"), "")]
    return " · ".join(part for part in parts if part)


def start_new_analysis() -> None:
    for key in (CURRENT_CASE_KEY, UPLOAD_STATE_KEY, TIMING_KEY):
        st.session_state.pop(key, None)


def render_inputs(client: BackendClient, error: str | None) -> None:
    upload_col, form_col = st.columns([1, 1.2], gap="large")
    with upload_col:
        uploaded, state = render_upload_panel(client)
    with form_col:
        render_patient_form(state, can_run=uploaded is not None and not (state and state.error))
        if error:
            st.error(f"Analysis failed: {error}", icon=":material/error:")


def render_result(client: BackendClient, case: dict[str, Any]) -> None:
    with st.container(border=True):
        summary_col, button_col = st.columns([5, 1], vertical_alignment="center")
        summary_col.markdown(study_summary(case, st.session_state.get(UPLOAD_STATE_KEY)))
        if button_col.button("New analysis", icon=":material/add_photo_alternate:", width="stretch"):
            start_new_analysis()
            st.rerun()
    if (elapsed := st.session_state.pop(TIMING_KEY, None)) is not None:
        st.caption(f"Result ready {elapsed:.2f} s after the click · case {case['case_id']}")
    render_case(client, case, key="analyze")


def render() -> None:
    st.title("Analyze a chest radiograph")
    client = backend_client()
    error = None
    uploaded = st.session_state.get(UPLOAD_KEY)
    # The click's run analyses before drawing anything, so the result replaces the inputs in this same run
    # (no second run, and no moment where the old form is shown under a finished result).
    if st.session_state.get(RUN_KEY) and uploaded is not None and current_case() is None:
        error = run_analysis(client, uploaded)
    case = current_case()
    if case is None:
        render_inputs(client, error)
    else:
        render_result(client, case)


if __name__ == "__main__":
    render()

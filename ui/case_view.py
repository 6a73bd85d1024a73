"""The result of one case, shared by Analyze and Case history: finding, charts, images, precedent, actions."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import streamlit as st

from ui.case_data import CaseArtifacts, cached_artifacts, overlay_at, remember_case
from ui.charts import confidence_gauge, probability_bars
from ui.client import REPORT_KINDS, BackendClient, BackendError
from ui.formatting import (
    SEX_LABELS,
    class_text,
    finding_text,
    percent,
    positive_class,
    result_notices,
    review_notes,
    scalar_items,
    short_datetime,
    uncertainty_summary,
)
from ui.imagery import blend_heatmap
from ui.nodule_view import render_marked_film, render_nodule_finding, render_nodule_review
from ui.session import backend_offers, handle_auth_error

REPORT_LABELS: dict[str, str] = {
    "radiologist": "Radiologist report",
    "clinical": "Clinical report",
    "patient": "Patient report",
}
DICOM_LABELS: dict[str, str] = {
    "sr": "DICOM structured report",
    "pdf": "DICOM radiologist report (PDF)",
    "sc": "DICOM heatmap overlay",
}
NOTICE_ICONS: dict[str, str] = {"error": ":material/block:", "warning": ":material/help:", "info": ":material/info:"}
DEFAULT_OPACITY = 0.4
STATUS_COLORS: dict[str, str] = {
    "analyzed": "blue",
    "queued_for_review": "orange",
    "reviewed": "violet",
    "signed": "green",
}


def render_case(client: BackendClient, case: dict[str, Any], *, key: str) -> None:
    """Draw a whole case; `key` keeps widgets of different views apart (e.g. "analyze", "history")."""
    artifacts = cached_artifacts(st.session_state, client, case)
    render_summary(artifacts.case)
    render_nodule_finding(artifacts)
    render_images(client, artifacts, key=key)
    render_nodule_review(client, artifacts, key=key)
    render_similar(artifacts)
    render_actions(client, artifacts, key=key)
    render_details(artifacts.case)


# --- finding, confidence, flags ------------------------------------------------------------------------------


def render_summary(case: dict[str, Any]) -> None:
    probabilities = {str(k): float(v) for k, v in (case.get("probabilities") or {}).items()}
    positive = positive_class(probabilities)
    reliable = not case.get("ood")
    finding_col, gauge_col, bars_col = st.columns([1.1, 1, 1.5], vertical_alignment="center")
    with finding_col:
        st.caption("AI finding")
        finding = finding_text(case)
        st.markdown(f"<h2 class='ai-finding' style='margin:0'>{html.escape(finding)}</h2>", unsafe_allow_html=True)
        render_status_badges(case)
        uncertainty = case.get("uncertainty") or {}
        if uncertainty:
            st.caption(
                f"Uncertainty: entropy {float(uncertainty.get('entropy', 0)):.3f} · "
                f"std {float(uncertainty.get('std', 0)):.3f}",
                help=uncertainty_summary(uncertainty),
            )
        timing = f" · {float(case['processing_time_ms']):.0f} ms" if case.get("processing_time_ms") is not None else ""
        timing = " · cached result" if case.get("cached") else timing
        st.caption(f"Model {case.get('model_version', '?')}{timing}")
    if case.get("confidence") is not None:
        gauge_col.plotly_chart(
            confidence_gauge(float(case["confidence"]), reliable=reliable), config={"displayModeBar": False}
        )
    if probabilities:
        bars_col.plotly_chart(
            probability_bars(
                {class_text(name, positive): p for name, p in probabilities.items()},
                threshold=case.get("threshold"),
                positive_class=positive,
                reliable=reliable,
            ),
            config={"displayModeBar": False},
        )
        if not reliable:
            bars_col.caption("Shown for transparency only: the model's output on this image is not a finding.")
    for notice in result_notices(case):
        show = {"error": st.error, "warning": st.warning, "info": st.info}[notice.severity]
        show(f"**{notice.title}.** {notice.text}", icon=NOTICE_ICONS[notice.severity])


def render_status_badges(case: dict[str, Any]) -> None:
    with st.container(horizontal=True, gap="small"):
        status = str(case.get("status") or "")
        if status and not (status == "signed" and case.get("signed_by")):  # the "signed by" badge says it
            st.badge(status.replace("_", " "), color=STATUS_COLORS.get(status, "gray"))  # type: ignore[arg-type]
        if case.get("uncertain") and not case.get("ood"):
            st.badge("uncertain", icon=":material/help:", color="orange")
        if case.get("ood"):
            st.badge("outside training domain", icon=":material/block:", color="red")
        if case.get("scope") == "outside_validated":
            st.badge("outside validated populations", icon=":material/groups:", color="orange")
        if case.get("signed_by"):
            st.badge(f"signed by {case['signed_by']}", icon=":material/verified:", color="green")


# --- image and Grad-CAM ----------------------------------------------------------------------------------------


def render_images(client: BackendClient, artifacts: CaseArtifacts, *, key: str) -> None:
    @st.fragment
    def image_panel() -> None:  # a fragment: moving the slider or the marks toggle redraws only the images
        image_col, overlay_col, legend_col = st.columns([1, 1, 0.55])
        with legend_col:
            opacity = st.slider(
                "Heatmap opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=f"{key}-opacity-{artifacts.case_id}"
            )
            st.caption(
                "Grad-CAM shows the regions that pushed the model towards its finding (red = strongest). "
                "It explains the model, not the anatomy: check that it looks at the lungs."
            )
            nodule = artifacts.case.get("nodule")
            show_marks = bool(nodule) and st.toggle(
                "Show nodule marks", value=True, key=f"{key}-nodule-marks-{artifacts.case_id}",
                help="Boxes where the nodule model located a nodule or mass; hover one for its score.",
            )  # fmt: skip
        if nodule:
            with image_col:
                render_marked_film(artifacts, show_marks=show_marks, key=key)
        elif artifacts.image is not None:
            image_col.image(artifacts.image, caption="Radiograph", width="stretch")
        else:
            image_col.info(artifacts.notes.get("image", "No image."), icon=":material/image_not_supported:")
        with overlay_col:
            render_overlay(client, artifacts, opacity)

    image_panel()


def render_overlay(client: BackendClient, artifacts: CaseArtifacts, opacity: float) -> None:
    if artifacts.heatmap is not None and artifacts.image is not None:
        blended = blend_heatmap(artifacts.image, artifacts.heatmap, opacity)
        st.image(blended, caption=f"Grad-CAM overlay ({percent(opacity)} opacity)", width="stretch")
        return
    overlay = overlay_at(client, artifacts, opacity) if "heatmap" not in artifacts.notes else None
    if overlay is not None:
        st.image(overlay, caption=f"Grad-CAM overlay ({percent(opacity)} opacity)", width="stretch")
    else:
        st.info(artifacts.notes.get("heatmap", "No heatmap for this case."), icon=":material/layers_clear:")


# --- similar cases ---------------------------------------------------------------------------------------------


def render_similar(artifacts: CaseArtifacts) -> None:
    st.markdown("##### Similar confirmed cases")
    if artifacts.neighbours is None:
        st.info(artifacts.notes.get("similar", "No similar cases."), icon=":material/image_search:")
        return
    if not artifacts.neighbours:
        st.info("The reference library holds no confirmed cases for this model version yet.")
        return
    columns = st.columns(max(len(artifacts.neighbours), 5))
    for column, neighbour in zip(columns, artifacts.neighbours, strict=False):
        with column:
            if neighbour.thumbnail:
                st.image(neighbour.thumbnail, width="stretch")
            st.markdown(f"**{neighbour.label}** · {percent(neighbour.similarity)} similar")
            st.caption(neighbour.origin, help=neighbour.identifier or None)


# --- reports, review, sign -------------------------------------------------------------------------------------


def _action_key(case_id: str) -> str:
    return f"case-action-{case_id}"


def _after_action(client: BackendClient, case_id: str, answer: dict[str, Any], message: str) -> None:
    case = answer if answer.get("case_id") == case_id else client.get_case(case_id)
    remember_case(st.session_state, case)
    st.session_state[_action_key(case_id)] = ("success", message)


def render_actions(client: BackendClient, artifacts: CaseArtifacts, *, key: str) -> None:
    case_id = artifacts.case_id
    reports_col, review_col, sign_col = st.columns([1, 1.4, 1], gap="medium")
    with reports_col:
        st.markdown("##### Reports (PDF)")
        render_report_buttons(client, case_id, key=key)
        render_export_buttons(client, case_id, key=key)
    with review_col:
        st.markdown("##### Expert review")
        render_review_form(client, artifacts, key=key)
    with sign_col:
        st.markdown("##### Sign-off")
        render_sign(client, artifacts, key=key)
    outcome = st.session_state.get(_action_key(case_id))
    if outcome:
        (st.success if outcome[0] == "success" else st.error)(outcome[1])


def render_report_buttons(client: BackendClient, case_id: str, *, key: str) -> None:
    if not backend_offers("GET", "/v1/cases/{case_id}/report"):
        st.info("PDF reports are not available on this backend yet.", icon=":material/picture_as_pdf:")
        return
    for kind in REPORT_KINDS:
        st.download_button(
            REPORT_LABELS[kind],
            data=lambda kind=kind: client.report(case_id, kind),  # fetched only when clicked
            file_name=f"cxr-{case_id}-{kind}.pdf",
            mime="application/pdf",
            icon=":material/download:",
            key=f"{key}-report-{kind}-{case_id}",
            on_click="ignore",
            width="stretch",
        )


def render_export_buttons(client: BackendClient, case_id: str, *, key: str) -> None:
    """The result for the PACS (DICOM, in the source study) and the patient record (FHIR), beside the PDFs."""
    if not backend_offers("GET", "/v1/cases/{case_id}/dicom"):
        return
    downloads = [(f"dicom-{kind}", label, lambda kind=kind: client.dicom(case_id, kind), "application/dicom", "dcm")
                 for kind, label in DICOM_LABELS.items()]  # fmt: skip
    downloads.append(("fhir", "FHIR report (JSON)", lambda: client.fhir(case_id), "application/fhir+json", "json"))
    for name, label, fetch, mime, extension in downloads:
        st.download_button(
            label,
            data=fetch,  # fetched only when clicked
            file_name=f"cxr-{case_id}-{name}.{extension}",
            mime=mime,
            icon=":material/download:",
            key=f"{key}-{name}-{case_id}",
            on_click="ignore",
            width="stretch",
        )


def render_review_form(client: BackendClient, artifacts: CaseArtifacts, *, key: str) -> None:
    for note in review_notes(artifacts.case):
        st.caption(note)
    if not backend_offers("POST", "/v1/cases/{case_id}/review"):
        st.info("Sending for review is not available on this backend yet.", icon=":material/rate_review:")
        return
    with st.form(f"{key}-review-{artifacts.case_id}", border=False, clear_on_submit=True):
        reason = st.text_area(
            "Reason", placeholder="e.g. subtle opacity in the left lower zone; please confirm", height=80
        )
        sent = st.form_submit_button("Send for expert review", icon=":material/send:")
    if sent:
        if not reason.strip():
            st.error("Give a reason so the expert knows what to look at.")
            return
        try:
            answer = client.send_for_review(artifacts.case_id, reason.strip())
            _after_action(client, artifacts.case_id, answer, "Sent for expert review.")
        except BackendError as error:
            handle_auth_error(error)
            st.session_state[_action_key(artifacts.case_id)] = ("error", f"Review request failed: {error.message}")
        st.rerun()


def render_sign(client: BackendClient, artifacts: CaseArtifacts, *, key: str) -> None:
    case = artifacts.case
    if case.get("signed_by") or case.get("status") == "signed":
        when = short_datetime(case.get("signed_at")) if case.get("signed_at") else ""
        st.success(f"Signed {('by ' + str(case['signed_by'])) if case.get('signed_by') else ''} {when}".strip())
        return
    if not backend_offers("POST", "/v1/cases/{case_id}/sign"):
        st.info("Signing is not available on this backend yet.", icon=":material/signature:")
        return
    st.caption("Sign once you have read the image; the reports then carry your name and the time.")
    classes = list(case.get("probabilities") or {})
    ai_finding = case.get("prediction")
    finding = st.radio(
        "Your finding",
        classes,
        index=classes.index(ai_finding) if ai_finding in classes else None,
        format_func=lambda name: f"{name} (as the AI)" if name == ai_finding else name,
        horizontal=True,
        key=f"{key}-finding-{artifacts.case_id}",
        help="A finding other than the AI's sends the case to the experts' annotation queue.",
    )
    if st.button("Sign case", icon=":material/verified:", key=f"{key}-sign-{artifacts.case_id}", type="primary"):
        try:
            done = "Case signed." if finding == ai_finding else "Case signed; it goes to the experts' queue."
            _after_action(client, artifacts.case_id, client.sign(artifacts.case_id, finding), done)
        except BackendError as error:
            handle_auth_error(error)
            st.session_state[_action_key(artifacts.case_id)] = ("error", f"Signing failed: {error.message}")
        st.rerun()


# --- patient, study, technical details -------------------------------------------------------------------------


def key_value_table(data: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"Field": list(data), "Value": [str(v) for v in data.values()]})


def render_details(case: dict[str, Any]) -> None:
    with st.expander("Patient, study and technical details"):
        patient_col, study_col, tech_col = st.columns(3)
        patient = dict(case.get("patient") or {})
        if "sex" in patient:
            patient["sex"] = SEX_LABELS.get(str(patient["sex"]), patient["sex"])
        patient_col.markdown("**Patient**")
        patient_col.dataframe(key_value_table(scalar_items(patient)), hide_index=True, width="stretch")
        study_col.markdown("**Study (DICOM tags)**")
        study = scalar_items(case.get("study") or {})
        if study:
            study_col.dataframe(key_value_table(study), hide_index=True, width="stretch")
        else:
            study_col.caption("No DICOM tags (the upload was not a DICOM file).")
        technical = {
            "Case ID": case.get("case_id"),
            "Created": short_datetime(case.get("created_at")),
            "Model version": case.get("model_version"),
            "Decision threshold": case.get("threshold"),
            "Processing time (ms)": case.get("processing_time_ms"),
            "Uncertainty method": (case.get("uncertainty") or {}).get("method"),
        }
        tech_col.markdown("**Technical**")
        tech_col.dataframe(
            key_value_table({k: v for k, v in technical.items() if v is not None}), hide_index=True, width="stretch"
        )

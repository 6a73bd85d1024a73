"""Annotation queue (annotators, seniors, admins): claim the next case, read the film blind, give a label, a
confidence, a comment and boxes drawn on the film, submit; then see the AI result and, once the label is final, the
other read. Seniors and admins adjudicate cases whose two reads disagree; everyone sees their own statistics; admins
see the retraining jobs.

The claim is a lock with an expiry on the backend: every run of this page (each click, each box drawn) renews it,
so it lapses only when the reader walks away. No patient identity is ever shown: the backend sends the film's facts
only (age, sex, view).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from ui.case_data import CaseArtifacts, why_no_nodule_finding
from ui.case_view import render_summary
from ui.client import BackendClient, BackendError
from ui.film_canvas import Film, draw_boxes_on, film_from_image
from ui.formatting import (
    annotator_stats_row,
    case_state_text,
    claim_expiry_text,
    counted,
    duration,
    film_facts,
    finding_text,
    kappa_text,
    label_option,
    model_stats_row,
    overall_stats,
    percent,
    read_summary,
    short_datetime,
)
from ui.imagery import ImageDataError, blend_heatmap, decode_heatmap, draw_boxes
from ui.nodule_view import render_nodule_finding
from ui.nodules import MARK_RGB, nodule_marks
from ui.retraining_jobs import render_retraining_jobs
from ui.session import ADMIN, ANNOTATOR, SENIOR, current_identity, handle_auth_error
from ui.session import client as backend_client

READ, ADJUDICATE, STATS, RETRAIN = "Read cases", "Adjudication", "My statistics", "Retraining"
VIEWS: dict[str, tuple[str, ...]] = {
    ANNOTATOR: (READ, STATS),
    SENIOR: (READ, ADJUDICATE, STATS),
    ADMIN: (READ, ADJUDICATE, STATS, RETRAIN),
}
ADJUDICATORS = frozenset({SENIOR, ADMIN})  # they also see every reader's statistics and may export the labels
VIEW_KEY = "queue-view"
CLAIM_KEY = "queue-claim"  # the ClaimOut being read
READ_KEY = "queue-read"  # the AnnotationOut of the read just submitted: its case is revealed until the next claim
FILM_KEY = "queue-film"
HEATMAP_KEY = "queue-heatmap"
NOTICE_KEY = "queue-notice"  # (severity, message) to show after a rerun
CLAIM_ENDED = frozenset({403, 404, 409})  # expired, taken over, released elsewhere: the lock is gone
FILM_COLUMNS = [2, 1]  # film : form
REVEAL_OPACITY = 0.4
READER_COLORS: tuple[tuple[int, int, int], ...] = ((255, 140, 0), (0, 190, 255), (170, 80, 255), (60, 220, 90))


def notify(severity: str, message: str) -> None:
    st.session_state[NOTICE_KEY] = (severity, message)


def show_notice() -> None:
    severity, message = st.session_state.pop(NOTICE_KEY, (None, None))
    if message:
        {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}[severity](message)


def fetch_film(client: BackendClient, case_id: str) -> Film:
    """The film of a case, downsized once per case and kept for this session's reruns."""
    film = st.session_state.get(FILM_KEY)
    if isinstance(film, Film) and film.case_id == case_id:
        return film
    film = film_from_image(case_id, client.case_image(case_id))
    st.session_state[FILM_KEY] = film
    return film


def fetch_heatmap(client: BackendClient, case_id: str) -> np.ndarray:
    """The case's raw Grad-CAM map, computed once per case and kept for this session's reruns."""
    cached = st.session_state.get(HEATMAP_KEY)
    if cached is not None and cached[0] == case_id:
        return cached[1]
    heatmap = decode_heatmap(client.heatmap_raw(case_id))
    st.session_state[HEATMAP_KEY] = (case_id, heatmap)
    return heatmap


# --- the claim: take, keep, give back ----------------------------------------------------------------------------


def take_next_case(client: BackendClient) -> None:
    try:
        claim = client.claim_next()
    except BackendError as error:
        handle_auth_error(error)
        notify("error", error.message)
        return
    if claim is None:
        notify("info", "No case is waiting for your read: the queue is empty, or every waiting case has already been "
                       "read by you or is being read by someone else. Try again later.")  # fmt: skip
        return
    st.session_state.pop(READ_KEY, None)
    st.session_state[CLAIM_KEY] = claim


def keep_claim(client: BackendClient) -> None:
    """Renew the lock on every run while the reader works; say so when it has already gone."""
    claim = st.session_state.get(CLAIM_KEY)
    if not claim:
        return
    try:
        st.session_state[CLAIM_KEY] = client.renew_claim(claim["claim_id"])
    except BackendError as error:
        handle_auth_error(error)
        if error.status_code not in CLAIM_ENDED:
            st.warning(f"Could not renew your claim: {error.message}", icon=":material/warning:")
            return
        st.session_state.pop(CLAIM_KEY, None)
        notify("warning", f"Your claim on case {claim['case_id'][:8]} has ended and nothing was saved for it: "
                          f"{error.message}")  # fmt: skip


def release(client: BackendClient, claim: dict[str, Any]) -> None:
    try:
        client.release_claim(claim["claim_id"])
        notify("info", f"Case {claim['case_id'][:8]} is back in the queue for another reader.")
    except BackendError as error:
        handle_auth_error(error)
        notify("warning", f"The claim had already ended: {error.message}")
    st.session_state.pop(CLAIM_KEY, None)


# --- reading -------------------------------------------------------------------------------------------------------


def render_reading(client: BackendClient) -> None:
    claim = st.session_state.get(CLAIM_KEY)
    if claim:
        render_claim(client, claim)
        return
    render_claim_button(client)
    read = st.session_state.get(READ_KEY)
    if read:
        render_revealed(client, read)


def render_claim_button(client: BackendClient) -> None:
    with st.container(horizontal=True, vertical_alignment="center", gap="medium"):
        if st.button("Claim next case", icon=":material/assignment_ind:", type="primary", key="queue-claim-next"):
            take_next_case(client)
            st.rerun()
        try:
            waiting = client.queue("open", limit=1)
            st.caption(f"Waiting for expert reads: {counted(waiting['total'], 'case')} "
                       f"(ordered by {waiting['strategy']}).")  # fmt: skip
        except BackendError as error:
            handle_auth_error(error)
            st.caption(f"Queue size unknown: {error.message}")
    if not st.session_state.get(READ_KEY):
        st.caption("You read each case blind: neither the AI result nor the other reader's label is shown until your "
                   "read is in. Two agreeing reads make the final label; a senior settles a disagreement.")  # fmt: skip


def render_claim(client: BackendClient, claim: dict[str, Any]) -> None:
    case = claim["case"]
    film = fetch_film(client, claim["case_id"])
    film_col, form_col = st.columns(FILM_COLUMNS, gap="large")
    with film_col:
        boxes = draw_boxes_on(film, key=f"queue-canvas-{claim['claim_id']}")
    with form_col:
        st.subheader(f"Case {claim['case_id'][:8]}")
        st.markdown(f"**Film:** {film_facts(case)}")
        st.caption(f"Your claim {claim_expiry_text(claim['expires_at'])}. It is renewed each time you work on this "
                   "page; leave the page idle past it and the case goes back to the queue.")  # fmt: skip
        for warning in case.get("image_warnings") or []:
            st.info(str(warning.get("message") or warning), icon=":material/info:")
        render_ai_before_read(client, claim, film)
        render_read_form(client, claim, boxes)
        if st.button("Release this case", icon=":material/undo:", key="queue-release",
                     help="Give the case back to the queue unread, for another reader"):  # fmt: skip
            release(client, claim)
            st.rerun()


def render_ai_before_read(client: BackendClient, claim: dict[str, Any], film: Film) -> None:
    """Blind reading shows nothing of the model; with SHOW_AI_TO_ANNOTATORS its finding, and its heatmap on request."""
    ai = claim["case"].get("ai")
    if not (claim.get("show_ai") and ai):
        st.caption("Blind read: the AI result is shown after you submit.")
        return
    st.markdown(f"**AI finding:** {finding_text(ai)} ({percent(ai['confidence'])} calibrated confidence)")
    if st.toggle("Show the AI heatmap", key=f"queue-heatmap-{claim['claim_id']}"):
        try:
            overlay = blend_heatmap(film.pixels, fetch_heatmap(client, film.case_id), REVEAL_OPACITY)
            st.image(overlay, caption="Grad-CAM overlay", width="stretch")
        except (BackendError, ImageDataError) as error:
            st.info(f"Grad-CAM heatmap: {error}")


def render_read_form(client: BackendClient, claim: dict[str, Any], boxes: list[dict[str, float]]) -> None:
    with st.form("queue-read-form", border=False):
        label = st.radio("Label", claim["labels"], index=None, format_func=label_option, key="queue-label")
        confidence = st.slider("Your confidence", 1, 5, 3, key="queue-confidence",
                               help="1 = a guess, 5 = certain")  # fmt: skip
        comment = st.text_area("Comment (optional)", key="queue-comment", max_chars=2000)
        submitted = st.form_submit_button("Submit read", icon=":material/send:", type="primary")
    if not submitted:
        return
    if label is None:
        st.error("Choose a label before submitting.")
        return
    try:
        read = client.submit_annotation(claim["case_id"], label, confidence, comment=comment.strip() or None,
                                        boxes=boxes)  # fmt: skip
    except BackendError as error:
        handle_auth_error(error)
        if error.status_code not in CLAIM_ENDED:
            st.error(error.message)  # the read itself was refused (422): keep the form as it is
            return
        st.session_state.pop(CLAIM_KEY, None)
        notify("warning", f"Your read was not saved: {error.message}")
        st.rerun()
    for key in ("queue-label", "queue-confidence", "queue-comment"):
        st.session_state.pop(key, None)
    st.session_state.pop(CLAIM_KEY, None)
    st.session_state[READ_KEY] = read
    boxes_saved = counted(len(read.get("boxes") or []), "box")
    notify("success", f"Your read of case {read['case_id'][:8]} is saved: {read['label']} "
                      f"(confidence {read['confidence']}/5, {boxes_saved}).")  # fmt: skip
    st.rerun()


def render_revealed(client: BackendClient, read: dict[str, Any]) -> None:
    """After the read: the film with the reader's boxes and the AI's nodule marks, the AI results (pneumonia, nodule)
    and heatmap, and the other reads once final."""
    case_id = read["case_id"]
    try:
        reads = client.case_annotations(case_id)
        case = client.get_case(case_id)
        film = fetch_film(client, case_id)
    except (BackendError, ImageDataError) as error:
        if isinstance(error, BackendError):
            handle_auth_error(error)
        st.warning(f"The result of case {case_id[:8]} cannot be shown: {error}")
        return
    st.subheader(f"Case {case_id[:8]}: your read and the AI result")
    st.markdown(case_state_text(reads["state"], reads.get("final")))
    render_summary(case)
    artifacts = CaseArtifacts(case=case, image_size=film.size)
    if case.get("nodule") is None:
        artifacts.notes["nodule"] = why_no_nodule_finding(client)
    render_nodule_finding(artifacts)
    film_col, heatmap_col = st.columns(2)
    boxes = read.get("boxes") or []
    marks = nodule_marks(case.get("nodule"))
    shown = draw_boxes(film.pixels, boxes, 1 / film.scale, READER_COLORS[0])
    shown = draw_boxes(shown, [m.box for m in marks], 1 / film.scale, MARK_RGB, [str(m.number) for m in marks])
    ai_marks = f" · the AI's nodule marks in yellow ({len(marks)})" if marks else ""
    film_col.image(shown, width="stretch",
                   caption=f"Your read: {read['label']}, {counted(len(boxes), 'box')} in orange{ai_marks}")  # fmt: skip
    try:
        heatmap = fetch_heatmap(client, case_id)
        heatmap_col.image(blend_heatmap(film.pixels, heatmap, REVEAL_OPACITY), caption="Grad-CAM overlay",
                          width="stretch")  # fmt: skip
    except (BackendError, ImageDataError) as error:
        heatmap_col.info(f"Grad-CAM heatmap: {error}")
    others = [r for r in reads["annotations"] if r["id"] != read["id"] and not r.get("superseded")]
    if others:
        st.markdown("##### All reads of this case")
        rows = [read_summary(r) for r in reads["annotations"] if not r.get("superseded")]
        st.dataframe(pd.DataFrame(rows), hide_index=True)


# --- adjudication --------------------------------------------------------------------------------------------------


def render_adjudication(client: BackendClient) -> None:
    waiting = client.queue("adjudication", limit=200)
    if not waiting["items"]:
        st.success("No case waits for adjudication: every double-read case so far has an agreed or final label.")
        return
    items = {item["case_id"]: item for item in waiting["items"]}
    case_id = st.selectbox(
        f"Cases whose reads disagree ({waiting['total']})",
        list(items),
        format_func=lambda cid: f"Case {cid[:8]} · waiting since {short_datetime(items[cid]['waiting_since'])}",
        key="adjudicate-case",
    )
    annotations = client.case_annotations(case_id)
    reads = [r for r in annotations["annotations"] if not r.get("superseded")]
    film = fetch_film(client, case_id)
    film_col, reads_col = st.columns([1.1, 1], gap="large")  # room for the reads side by side
    shown = film.pixels
    for index, read in enumerate(reads):
        shown = draw_boxes(shown, read.get("boxes") or [], 1 / film.scale, READER_COLORS[index % len(READER_COLORS)])
    film_col.image(shown, caption="Boxes of each reader in their colour", width="stretch")
    with reads_col:
        st.subheader(f"Case {case_id[:8]}")
        render_reads_side_by_side(reads)
        render_adjudication_form(client, case_id, annotations["labels"])


def render_reads_side_by_side(reads: list[dict[str, Any]]) -> None:
    for index, (column, read) in enumerate(zip(st.columns(max(1, len(reads))), reads, strict=False)):
        red, green, blue = READER_COLORS[index % len(READER_COLORS)]
        row = read_summary(read)
        column.markdown(
            f"<span style='color:rgb({red},{green},{blue})'>■</span> **{html.escape(row['Reader'])}**",
            unsafe_allow_html=True,
        )
        column.markdown(f"### {html.escape(row['Label'])}")
        column.caption(f"Confidence {row['Confidence']} · {row['Time']} · {row['When']}")
        column.markdown(f"Boxes: {row['Boxes']}")
        if row["Comment"]:
            column.markdown(f"> {row['Comment']}")


def render_adjudication_form(client: BackendClient, case_id: str, labels: list[str]) -> None:
    """`labels`: what a read of this case may say, from the backend (the model's classes, OTHER, UNGRADABLE)."""
    with st.form(f"adjudicate-form-{case_id}", border=False):
        label = st.radio("Final label", labels, index=None, format_func=label_option, key=f"adjudicate-label-{case_id}")
        comment = st.text_area("Comment (optional)", max_chars=2000, key=f"adjudicate-comment-{case_id}")
        submitted = st.form_submit_button("Record final label", icon=":material/gavel:", type="primary")
    if not submitted:
        return
    if label is None:
        st.error("Choose the final label first.")
        return
    try:
        final = client.adjudicate(case_id, label, comment.strip() or None)
    except BackendError as error:
        handle_auth_error(error)
        st.error(error.message)
        return
    notify("success", f"Final label of case {case_id[:8]}: {final['label']} (held for {final['split']}).")
    st.rerun()


# --- statistics ----------------------------------------------------------------------------------------------------


def render_statistics(client: BackendClient, username: str, role: str) -> None:
    stats = client.annotation_stats()
    mine = next((row for row in stats.get("annotators", []) if row.get("annotator") == username), None)
    st.markdown("##### My statistics")
    if mine is None:
        st.info("You have no reads yet.")
    else:
        cells = st.columns(4)
        cells[0].metric("Reads", mine.get("reads", 0))
        cells[1].metric("Agreement", percent(mine.get("agreement_rate")), help="Share of your reads that match the "
                        "other reader's, on cases read twice")  # fmt: skip
        cells[2].metric("Kappa vs final", kappa_text(mine.get("kappa_vs_final")), help="Cohen's kappa of your reads "
                        "against the final labels (1 = perfect, 0 = chance)")  # fmt: skip
        cells[3].metric("Median time per read", duration(mine.get("median_seconds")))
    st.markdown("##### All readers together")
    for column, (label, value) in zip(st.columns(6), overall_stats(stats.get("overall") or {}).items(), strict=True):
        column.metric(label, value)
    if role not in ADJUDICATORS:
        return
    st.markdown("##### Every reader")
    st.dataframe(pd.DataFrame([annotator_stats_row(row) for row in stats.get("annotators", [])]), hide_index=True)
    st.markdown("##### The model against final expert labels")
    models = stats.get("models") or []
    if models:
        st.dataframe(pd.DataFrame([model_stats_row(row) for row in models]), hide_index=True)
    else:
        st.info("No final expert label yet.")
    if st.button("Export final labels (CSV)", icon=":material/download:", key="queue-export"):
        st.download_button("Download expert-labels.csv", client.annotations_export(), file_name="expert-labels.csv",
                           mime="text/csv")  # fmt: skip


# --- the page ------------------------------------------------------------------------------------------------------


def render() -> None:
    st.title("Annotation queue")
    identity = current_identity()
    if identity is None:
        return
    client = backend_client()
    views = VIEWS.get(identity.role, (READ, STATS))
    view = st.radio("View", views, horizontal=True, key=VIEW_KEY, label_visibility="collapsed")
    keep_claim(client)
    show_notice()
    try:
        if view == READ:
            render_reading(client)
        elif view == ADJUDICATE:
            render_adjudication(client)
        elif view == STATS:
            render_statistics(client, identity.username, identity.role)
        else:
            render_retraining_jobs(client)
    except BackendError as error:
        handle_auth_error(error)
        st.error(error.message, icon=":material/error:")
    except ImageDataError as error:
        st.error(str(error))


if __name__ == "__main__":
    render()

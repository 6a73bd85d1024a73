"""The nodule/mass finding in a case view (Analyze, Case history): the finding with its measured performance and its
numbered marks, the film with the marks drawn (a toggle; the score on hover), and the radiologist's review of the
marks (confirm or reject each, add boxes on the drawing canvas, the finding, a comment) with the earlier reviews.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from ui.case_data import CaseArtifacts, remember_case
from ui.client import BackendClient, BackendError
from ui.film_canvas import draw_boxes_on, film_from_pixels, png_bytes
from ui.formatting import percent
from ui.imagery import draw_boxes
from ui.nodules import (
    CONFIRMED,
    FINDING_TEXT,
    MARK_RGB,
    NO_MODEL,
    NO_NODULE,
    NODULE,
    REJECTED,
    VERDICT_TEXT,
    Mark,
    mark_figure,
    mark_text,
    nodule_headline,
    nodule_marks,
    performance_line,
    probability_line,
    review_body_marks,
    review_row,
    verdict_tally,
)
from ui.session import backend_offers, handle_auth_error

REVIEW_ROUTE = "/v1/cases/{case_id}/nodule-review"
FILM_ASSUMED_WIDTH = 375  # px: the film column of the images row in a laptop-wide window; sets the figure's height
FIGURE_HEIGHT_RANGE = (300, 560)
REVIEW_FILM = (560, 640)  # the review canvas's largest width, height
REVIEWS_KEY = "nodule-reviews"  # case id -> its stored reviews, fetched once and again after each submit
ROUND_KEY = "nodule-review-round"  # case id -> how many reviews this session submitted: fresh widgets after each
REVIEW_HELP = (
    "Confirm or reject each mark, draw the ones the model missed, and give your finding. A rejected or added mark, "
    "or another finding, sends the case to the experts' queue."
)
SAVED_KEY = "nodule-review-saved"  # case id -> what the last review submitted here saved, in words


# --- the finding ---------------------------------------------------------------------------------------------------


def render_nodule_finding(artifacts: CaseArtifacts) -> None:
    """The second finding under the first: label, probability, the measured performance, the marks in words."""
    nodule = artifacts.case.get("nodule")
    with st.container(border=True):
        if not nodule:
            st.caption("AI finding · nodule or mass")
            st.info(artifacts.notes.get("nodule", f"{NO_MODEL}."), icon=":material/visibility_off:")
            return
        finding_col, marks_col = st.columns([1.3, 2.5], gap="medium")
        with finding_col:
            st.caption("AI finding · nodule or mass")
            headline = html.escape(nodule_headline(nodule, ood=bool(artifacts.case.get("ood"))))
            st.markdown(f"<h3 class='nodule-finding' style='margin:0'>{headline}</h3>", unsafe_allow_html=True)
            st.markdown(probability_line(nodule))
            st.caption(f"Model {nodule.get('model_version', '?')}")
        with marks_col:
            st.markdown(f":material/straighten: **How good are these marks?** {performance_line(nodule)}")
            marks = nodule_marks(nodule)
            if marks:
                st.markdown("\n".join(f"- {mark_text(mark, artifacts.image_size)}" for mark in marks))
            else:
                st.caption("No location marked on this film.")
            if artifacts.case.get("ood"):
                st.caption("The film is outside the training domain: the nodule model's output and marks are shown "
                           "for transparency only, not as a finding.")  # fmt: skip


# --- the film with its marks ---------------------------------------------------------------------------------------


def figure_height(size: tuple[int, int]) -> int:
    low, high = FIGURE_HEIGHT_RANGE
    return max(low, min(high, round(FILM_ASSUMED_WIDTH * size[1] / size[0])))


def render_marked_film(artifacts: CaseArtifacts, *, show_marks: bool, key: str) -> None:
    """The radiograph as a plotly figure in stored-image pixels, with the nodule marks when `show_marks`."""
    if artifacts.image is None or artifacts.image_size is None:
        st.info(artifacts.notes.get("image", "No image."), icon=":material/image_not_supported:")
        return
    if artifacts.display_png is None:
        artifacts.display_png = png_bytes(artifacts.image)
    marks = nodule_marks(artifacts.case.get("nodule")) if show_marks else []
    shown = (artifacts.image.shape[1], artifacts.image.shape[0])
    figure = mark_figure(artifacts.display_png, shown, artifacts.image_size, marks, height=figure_height(shown))
    st.plotly_chart(figure, config={"displayModeBar": False}, key=f"{key}-film-{artifacts.case_id}")
    hint = f" · {len(marks)} nodule marks (hover a box for its score)" if marks else ""
    st.caption(f"Radiograph{hint}")


# --- the radiologist's review of the marks -------------------------------------------------------------------------


def render_nodule_review(client: BackendClient, artifacts: CaseArtifacts, *, key: str) -> None:
    nodule = artifacts.case.get("nodule")
    if not nodule or artifacts.image is None or artifacts.image_size is None:
        return
    case_id = artifacts.case_id
    st.markdown("##### Your read of the nodule marks")
    if not backend_offers("POST", REVIEW_ROUTE):
        st.info("Reviewing the nodule marks is not available on this backend yet.", icon=":material/rate_review:")
        return
    if saved := st.session_state.get(SAVED_KEY, {}).get(case_id):
        st.success(saved, icon=":material/task_alt:")
    render_past_reviews(client, case_id)
    round_ = st.session_state.setdefault(ROUND_KEY, {}).get(case_id, 0)  # a new round starts with the review closed
    if not st.toggle("Review the nodule marks", key=f"{key}-nodule-review-{case_id}-{round_}", help=REVIEW_HELP):
        return
    film = film_from_pixels(case_id, artifacts.image, artifacts.image_size, *REVIEW_FILM)
    marks = nodule_marks(nodule)
    labelled = draw_boxes(film.pixels, [m.box for m in marks], 1 / film.scale, MARK_RGB, [str(m.number) for m in marks])
    film_col, form_col = st.columns([2, 1], gap="large")
    with film_col:
        added = draw_boxes_on(film, key=f"{key}-nodule-canvas-{case_id}-{round_}", background=png_bytes(labelled))
    with form_col:
        render_review_form(client, artifacts, marks, added, key=f"{key}-nodule-form-{case_id}-{round_}")


def render_past_reviews(client: BackendClient, case_id: str) -> None:
    reviews: dict[str, list[dict[str, Any]]] = st.session_state.setdefault(REVIEWS_KEY, {})
    if case_id not in reviews:
        try:
            reviews[case_id] = client.nodule_reviews(case_id)
        except BackendError as error:
            handle_auth_error(error)
            st.caption(f"Earlier reviews cannot be shown: {error.message}")
            return
    if reviews[case_id]:
        st.caption("Earlier reviews of these marks (newest first)")
        st.table(pd.DataFrame([review_row(review) for review in reviews[case_id]]))


def render_review_form(
    client: BackendClient,
    artifacts: CaseArtifacts,
    marks: Sequence[Mark],
    added: list[dict[str, float]],
    *,
    key: str,
) -> None:
    nodule = artifacts.case["nodule"]
    with st.form(key, border=False):
        verdicts = {
            mark.number: st.radio(
                f"Mark {mark.number} · score {percent(mark.score)}",
                (CONFIRMED, REJECTED),
                index=None,
                format_func=VERDICT_TEXT.get,
                horizontal=True,
                key=f"{key}-mark-{mark.number}",
            )
            for mark in marks
        }
        choices = [NODULE, NO_NODULE]
        finding = st.radio("Your nodule finding", choices, index=choices.index(nodule.get("label", NODULE)) if
                           nodule.get("label") in choices else None, format_func=finding_option(nodule),
                           key=f"{key}-finding")  # fmt: skip
        comment = st.text_area("Comment (optional)", max_chars=2000, key=f"{key}-comment")
        submitted = st.form_submit_button("Submit nodule review", icon=":material/send:", type="primary")
    if submitted:
        submit_review(client, artifacts, review_marks=(marks, verdicts, added), finding=finding, comment=comment)


def finding_option(nodule: dict[str, Any]) -> Any:
    def text(label: str) -> str:
        words = FINDING_TEXT.get(label, label)
        return f"{words} (as the AI)" if label == nodule.get("label") else words

    return text


def submit_review(
    client: BackendClient, artifacts: CaseArtifacts, *, review_marks: tuple, finding: str | None, comment: str
) -> None:
    case_id = artifacts.case_id
    try:
        body_marks = review_body_marks(*review_marks)
    except ValueError as error:
        st.error(str(error))
        return
    if finding is None:
        st.error("Choose your nodule finding before submitting.")
        return
    try:
        stored = client.submit_nodule_review(case_id, body_marks, finding, comment.strip() or None)
        remember_case(st.session_state, client.get_case(case_id))  # the review may have queued the case
    except BackendError as error:
        handle_auth_error(error)
        st.error(f"The review was not saved: {error.message}")
        return
    st.session_state.setdefault(REVIEWS_KEY, {}).pop(case_id, None)
    rounds = st.session_state.setdefault(ROUND_KEY, {})
    rounds[case_id] = rounds.get(case_id, 0) + 1
    saved = f"Your nodule review is saved: {FINDING_TEXT.get(finding, finding)} · {verdict_tally(body_marks)}."
    if stored.get("queued"):
        saved += " It differs from the AI, so the case goes to the experts' annotation queue."
    st.session_state.setdefault(SAVED_KEY, {})[case_id] = saved
    st.rerun()

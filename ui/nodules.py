"""The nodule/mass finding on screen, as pure functions of the case JSON's `nodule` object (no Streamlit here).

The marks become plotly rectangles over the film, a numbered list beside the finding, and the body of a radiologist's
review. Coordinates stay in the stored image's pixels, as the backend gives them: the film picture is stretched over
that range (the plotly image's `dx`/`dy`), so a mark is drawn exactly where the case JSON puts it and hovering shows
the same numbers the PDFs and the exports carry.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from ui.formatting import counted, percent, short_datetime

NODULE_TASK = "nodule"
NODULE, NO_NODULE = "NODULE", "NO_NODULE"
FINDING_TEXT: dict[str, str] = {NODULE: "Nodule or mass suspected", NO_NODULE: "No nodule or mass found"}
CONFIRMED, REJECTED, ADDED = "confirmed", "rejected", "added"
VERDICT_TEXT: dict[str, str] = {CONFIRMED: "Confirm", REJECTED: "Reject"}
NO_MODEL = "No nodule model is served"
# Yellow, as CAD marks usually are: stands out on a grey film, and is neither the heatmap's red nor the orange of an
# expert reader's boxes (the annotation queue shows both on one film).
MARK_COLOR = "#ffe600"
MARK_RGB = (255, 230, 0)
DISAGREEMENT_TEXT: dict[str, str] = {"finding": "finding", "rejected_mark": "rejected mark", "added_box": "added box"}
FIGURE_MARGIN = {"l": 0, "r": 0, "t": 0, "b": 0}


@dataclass(frozen=True)
class Mark:
    """One located nodule/mass candidate, numbered by score (1 = highest), in stored-image pixels."""

    number: int
    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def box(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


def nodule_marks(nodule: Mapping[str, Any] | None) -> list[Mark]:
    """The finding's locations as numbered marks, highest score first (the order of the list and the labels)."""
    locations = [loc for loc in (nodule or {}).get("locations") or [] if isinstance(loc, Mapping)]
    ranked = sorted(locations, key=lambda loc: -float(loc.get("score", 0.0)))
    return [
        Mark(i, float(loc["x"]), float(loc["y"]), float(loc["w"]), float(loc["h"]), float(loc.get("score", 0.0)))
        for i, loc in enumerate(ranked, start=1)
    ]


# --- words --------------------------------------------------------------------------------------------------------


def nodule_headline(nodule: Mapping[str, Any], *, ood: bool = False) -> str:
    """The finding in words; on a film the input gate calls outside the training domain, no finding at all, as for
    pneumonia (the nodule model reads the same film, and nothing tells it is fit for this one either)."""
    if ood:
        return "No reliable finding"
    label = str(nodule.get("label") or "")
    return FINDING_TEXT.get(label, label.replace("_", " ").capitalize() or "No label")


def nodule_cell(case: Mapping[str, Any]) -> str:
    """The nodule finding in a list of cases: "Nodule or mass suspected (2 marks)"; "not read" when no nodule model
    read the film."""
    nodule = case.get("nodule")
    if not nodule:
        return "not read"
    marks = len(nodule.get("locations") or [])
    return f"{nodule_headline(nodule, ood=bool(case.get('ood')))} ({counted(marks, 'mark')})"


def probability_line(nodule: Mapping[str, Any]) -> str:
    """ "Probability 73% (threshold 50%) · 3 marks" """
    parts = [f"Probability {percent(nodule.get('probability'), 1)}"]
    if nodule.get("threshold") is not None:
        parts[0] += f" (threshold {percent(nodule['threshold'])})"
    parts.append(counted(len(nodule.get("locations") or []), "mark"))
    return " · ".join(parts)


def performance_line(nodule: Mapping[str, Any]) -> str:
    """What the model measured on its test films, as the model card states it; said plainly when it states nothing."""
    performance = nodule.get("performance") or {}
    summary = str(performance.get("summary") or "").strip()
    if summary:
        return summary
    return "The model states no measured sensitivity or false marks per film: weigh its marks with extra care."


def no_model_note(detail: str | None) -> str:
    """Why the case has no nodule finding, from the backend's own sentence (GET /model/info?task=nodule)."""
    detail = (detail or "").strip()
    if not detail:
        return f"{NO_MODEL}."
    if detail.lower().startswith(NO_MODEL.lower()):
        return detail
    return f"{NO_MODEL}: {detail[0].lower()}{detail[1:]}"


def position_text(mark: Mark, size: tuple[int, int]) -> str:
    """Where the mark sits, as a reader says it on a frontal film: which third of the film, which side of the patient
    (the patient's right is on the film's left, as frontal chest films are shown)."""
    width, height = size
    x, y = mark.centre
    third = ("upper", "middle", "lower")[min(2, max(0, int(3 * y / height)))] if height else "?"
    side = "right" if x < width / 2 else "left"
    return f"{third} third, patient's {side}"


def mark_text(mark: Mark, size: tuple[int, int] | None) -> str:
    """ "Mark 1 · score 87% · upper third, patient's right · 60×60 px box centred at (412, 300)" """
    x, y = mark.centre
    where = f" · {position_text(mark, size)}" if size else ""
    size_text = f"{mark.w:.0f}×{mark.h:.0f} px box centred at ({x:.0f}, {y:.0f})"
    return f"Mark {mark.number} · score {percent(mark.score)}{where} · {size_text}"


# --- the film with its marks ----------------------------------------------------------------------------------------


def mark_shapes(marks: Sequence[Mark]) -> list[dict[str, Any]]:
    """One plotly rectangle per mark, in stored-image pixels."""
    return [
        {"type": "rect", "xref": "x", "yref": "y", "x0": m.x, "y0": m.y, "x1": m.x + m.w, "y1": m.y + m.h,
         "line": {"color": MARK_COLOR, "width": 2}, "fillcolor": "rgba(0,0,0,0)", "name": f"mark {m.number}"}
        for m in marks
    ]  # fmt: skip


def hover_areas(marks: Sequence[Mark]) -> list[go.Scatter]:
    """One invisible filled rectangle per mark, named by its score: hovering anywhere inside a box tells the reader
    what the model gave it (plotly shows a filled area's name on hover)."""
    return [
        go.Scatter(
            x=[m.x, m.x + m.w, m.x + m.w, m.x, m.x], y=[m.y, m.y, m.y + m.h, m.y + m.h, m.y], mode="lines",
            fill="toself", fillcolor="rgba(0,0,0,0)", line={"width": 0}, hoveron="fills", showlegend=False,
            name=f"Mark {m.number}: score {percent(m.score)}", hoverlabel={"namelength": -1},
        )
        for m in marks
    ]  # fmt: skip


def mark_numbers(marks: Sequence[Mark]) -> go.Scatter:
    """The mark's number inside its box's top-left corner (inside: a box at the film's edge keeps it), matching the
    list beside the film."""
    return go.Scatter(
        x=[m.x for m in marks], y=[m.y for m in marks], text=[str(m.number) for m in marks], mode="text",
        textposition="bottom right", textfont={"color": MARK_COLOR, "size": 14}, hoverinfo="skip", showlegend=False,
    )  # fmt: skip


def mark_figure(
    film_png: bytes, shown: tuple[int, int], stored: tuple[int, int], marks: Sequence[Mark], *, height: int
) -> go.Figure:
    """The film (a display-sized PNG, `shown` width, height) spread over the stored image's pixel range (`stored`),
    with the marks as rectangles and their scores on hover. No marks: the film alone, at the same size."""
    (shown_w, shown_h), (stored_w, stored_h) = shown, stored
    dx, dy = stored_w / shown_w, stored_h / shown_h
    source = "data:image/png;base64," + base64.b64encode(film_png).decode("ascii")
    # x0/y0 are the first pixel's centre: half a pixel in, so the picture's edges fall on 0 and the stored size.
    figure = go.Figure(go.Image(source=source, x0=dx / 2, y0=dy / 2, dx=dx, dy=dy, hoverinfo="skip"))
    if marks:
        figure.add_traces([*hover_areas(marks), mark_numbers(marks)])
    figure.update_layout(
        shapes=mark_shapes(marks),
        height=height,
        margin=FIGURE_MARGIN,
        xaxis={"range": [0, stored_w], "visible": False, "constrain": "domain"},
        yaxis={"range": [stored_h, 0], "visible": False, "scaleanchor": "x", "constrain": "domain"},
        hovermode="closest",
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        dragmode="zoom",
    )
    return figure


# --- the radiologist's review --------------------------------------------------------------------------------------


def review_body_marks(
    marks: Sequence[Mark], verdicts: Mapping[int, str | None], added: Sequence[Mapping[str, float]]
) -> list[dict[str, Any]]:
    """The `marks` of POST /v1/cases/{id}/nodule-review: every model mark with the reader's verdict, then each box the
    reader drew as `added`. Raises ValueError naming the marks still without a verdict."""
    missing = [m.number for m in marks if verdicts.get(m.number) not in (CONFIRMED, REJECTED)]
    if missing:
        numbers = ", ".join(str(n) for n in missing)
        raise ValueError(f"Confirm or reject {'mark' if len(missing) == 1 else 'marks'} {numbers} before submitting.")
    body = [{**m.box, "verdict": verdicts[m.number]} for m in marks]
    body += [{"x": b["x"], "y": b["y"], "w": b["w"], "h": b["h"], "verdict": ADDED} for b in added]
    return body


def verdict_tally(marks: Sequence[Any]) -> str:
    """ "2 confirmed · 1 rejected · 1 added" """
    verdicts = [m.get("verdict") for m in marks if isinstance(m, Mapping)]
    return " · ".join(f"{verdicts.count(verdict)} {verdict}" for verdict in (CONFIRMED, REJECTED, ADDED))


def review_row(review: Mapping[str, Any]) -> dict[str, str]:
    """One stored review as a table row: who, when, the finding, what became of the marks, the comment."""
    reader = review.get("reviewer") or review.get("radiologist") or review.get("created_by") or review.get("username")
    return {
        "Reader": str(reader or ""),
        "When": short_datetime(review.get("created_at")),
        "Finding": FINDING_TEXT.get(str(review.get("finding")), str(review.get("finding") or "")),
        "Marks": verdict_tally(review.get("marks") or []),
        "Differs from the AI": ", ".join(DISAGREEMENT_TEXT.get(d, str(d)) for d in review.get("disagreement") or [])
        or "no",
        "Comment": str(review.get("comment") or ""),
    }

"""Plotly figures for a result: the calibrated confidence gauge and the per-class probability bars."""

from __future__ import annotations

import plotly.graph_objects as go

NEUTRAL = "#4c78a8"
POSITIVE = "#d62728"
MUTED = "#9aa5b1"
CHART_HEIGHT = 230
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def confidence_gauge(confidence: float, *, reliable: bool = True) -> go.Figure:
    """How sure the calibrated model is of its own finding (0-100%); greyed out when the finding is unreliable."""
    figure = go.Figure(
        go.Indicator(
            mode="gauge+number",
            value=round(confidence * 100, 1),
            number={"suffix": "%", "font": {"size": 34}},
            title={"text": "Calibrated confidence", "font": {"size": 15}},
            gauge={
                "axis": {"range": [0, 100], "ticksuffix": "%"},
                "bar": {"color": NEUTRAL if reliable else MUTED},
                "steps": [
                    {"range": [0, 60], "color": "#f2f2f2"},
                    {"range": [60, 80], "color": "#e6e6e6"},
                    {"range": [80, 100], "color": "#d9d9d9"},
                ],
            },
        )
    )
    figure.update_layout(height=CHART_HEIGHT, margin={**_MARGIN, "l": 30, "r": 30})  # room for the 0 and 100 ticks
    return figure


def probability_bars(
    probabilities: dict[str, float],
    *,
    threshold: float | None = None,
    positive_class: str | None = None,
    reliable: bool = True,
) -> go.Figure:
    """One horizontal bar per class; the decision threshold is drawn where it applies (the positive class)."""
    classes = list(probabilities)
    values = [probabilities[name] * 100 for name in classes]
    colors = (
        [POSITIVE if name == positive_class else NEUTRAL for name in classes] if reliable else [MUTED] * len(classes)
    )
    figure = go.Figure(
        go.Bar(
            x=values,
            y=classes,
            orientation="h",
            marker_color=colors,
            text=[f"{value:.1f}%" for value in values],
            textposition="auto",
            insidetextanchor="end",
            hovertemplate="%{y}: %{x:.1f}%<extra></extra>",
        )
    )
    if threshold is not None and positive_class in probabilities:
        figure.add_vline(
            x=threshold * 100,
            line_dash="dash",
            line_color="#333",
            annotation_text=f"threshold {threshold * 100:.0f}%",
            annotation_position="top",
        )
    figure.update_layout(
        title={"text": "Probability per class", "font": {"size": 15}},
        height=CHART_HEIGHT,
        margin=_MARGIN,
        xaxis={"range": [0, 112], "ticksuffix": "%", "showgrid": True},
        yaxis={"autorange": "reversed"},
        showlegend=False,
    )
    return figure

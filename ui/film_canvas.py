"""A film on a drawing canvas, shared by every page where an expert draws boxes (the annotation queue's read, the
radiologist's review of the nodule marks): the film at reading size, and the boxes drawn on it in stored-image pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

from ui.formatting import box_text, counted, image_boxes
from ui.imagery import grayscale_display, image_size, scaled_into

# The film on screen, in pixels: as large as the film column of a laptop-wide window holds without squeezing the
# drawing canvas (a squeezed canvas distorts the film), and a whole PA film still fits the screen's height.
FILM_WIDTH, FILM_HEIGHT = 600, 720
BOX_STROKE = "#ff8c00"
BOX_FILL = "rgba(255, 140, 0, 0.12)"


@dataclass(frozen=True)
class Film:
    """A case's film as shown: display pixels, its PNG for the drawing canvas, and stored-image pixels per shown one."""

    case_id: str
    pixels: np.ndarray
    png: bytes
    scale: float  # stored / displayed
    size: tuple[int, int]  # stored width, height


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def film_from_pixels(
    case_id: str, pixels: np.ndarray, size: tuple[int, int], width: int = FILM_WIDTH, height: int = FILM_HEIGHT
) -> Film:
    """A film from any display copy of the stored image (`size`: the stored width, height), fitted for reading."""
    shown = scaled_into(pixels, width, height)
    return Film(case_id, shown, png_bytes(shown), size[0] / shown.shape[1], size)


def film_from_image(case_id: str, data: bytes, width: int = FILM_WIDTH, height: int = FILM_HEIGHT) -> Film:
    """A film from the stored image's bytes (GET /v1/cases/{id}/image)."""
    return film_from_pixels(case_id, grayscale_display(data, height), image_size(data), width, height)


def draw_boxes_on(film: Film, *, key: str, background: bytes | None = None) -> list[dict[str, float]]:
    """The film (or `background`, a picture of it at the same size) on a drawing canvas; returns the boxes drawn,
    in pixels of the stored image."""
    # Imported here: the component registers its frontend with the running Streamlit server, so importing it at
    # module level breaks plain imports of the pages (the registry test, tooling).
    from streamlit_drawable_canvas import st_canvas

    height, width = film.pixels.shape[:2]
    result = st_canvas(
        background_image=background or film.png,
        drawing_mode="labeled_rect",
        stroke_color=BOX_STROKE,
        fill_color=BOX_FILL,
        stroke_width=2,
        width=width,
        height=height,
        key=key,
    )
    boxes = image_boxes(result.boxes, film.scale, film.size)
    drawn = f"{counted(len(boxes), 'box')}: " + "; ".join(box_text(box) for box in boxes) if boxes else "No box yet."
    st.caption(f"{drawn} Drag on the film to draw a box around each finding; the toolbar above the film (on hover) "
               "undoes, redoes and clears.")  # fmt: skip
    return boxes

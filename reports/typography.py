"""Fonts that render any patient's name, and the markup that picks a font per character.

reportlab draws each text run in one font, and no single small font covers Latin, Greek, Cyrillic and CJK. So text
is split into runs by which font has the glyph, in this order:

1. the bundled DejaVu Sans subset (reports/fonts/DejaVuSans*-subset.ttf): Latin incl. accents and Vietnamese, Greek,
   Cyrillic, Hebrew, Arabic, punctuation and symbols; regular and bold;
2. the bundled Droid Sans Fallback subset (reports/fonts/DroidSansFallback-subset.ttf): common Chinese (simplified and
   traditional), Japanese and all Korean Hangul;
3. the bundled Noto Sans Arabic (letters DejaVu lacks) and Noto Sans Devanagari subsets (reports/fonts/NotoSans*);
4. only when a character is in none: `ReportContext.extra_font_paths`, then the system fonts in
   SYSTEM_FALLBACK_FONT_PATHS that exist (Debian packages fonts-dejavu-core, fonts-droid-fallback, fonts-wqy-microhei).

A character no font has is drawn as the primary font's empty box (its text still copies out of the PDF) and logged.
Every font is embedded as a subset of the glyphs used, so PDFs stay small.

Arabic, Hebrew and Devanagari need more than glyphs. Letters join and change form (Arabic), and consonant clusters
and vowel signs combine and reorder (Devanagari): a paragraph with such text is drawn with reportlab's shaping
(`needs_shaping`, style `shaping=1`), which runs HarfBuzz (uharfbuzz) over each word and lays an Arabic or Hebrew
word out right to left. The words of a right-to-left run are then put in visual order here (`visual_line`, the
Unicode bidi rules at word level), because reportlab lays words out left to right.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib.fonts import addMapping
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

logger = logging.getLogger(__name__)

FONT_DIR = Path(__file__).resolve().parent / "fonts"
SANS = "ReportSans"
SANS_BOLD = "ReportSans-Bold"
CJK = "ReportCJK"
ARABIC, DEVANAGARI = "ReportArabic", "ReportDevanagari"
BUNDLED_FONTS = {
    SANS: FONT_DIR / "DejaVuSans-subset.ttf",
    SANS_BOLD: FONT_DIR / "DejaVuSans-Bold-subset.ttf",
    CJK: FONT_DIR / "DroidSansFallback-subset.ttf",
    ARABIC: FONT_DIR / "NotoSansArabic-subset.ttf",
    DEVANAGARI: FONT_DIR / "NotoSansDevanagari-subset.ttf",
}
SYSTEM_FALLBACK_FONT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)
# Characters that wrap anywhere (no spaces between words): CJK ideographs, kana, Hangul and full-width forms.
_CJK_TEXT = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_BREAKS = re.compile(r"\r\n|\r|\n")
# Scripts whose letters join, reorder or combine: Hebrew, Arabic (with supplements and presentation forms), Devanagari.
_SHAPED_TEXT = re.compile(r"[\u0590-\u08ff\u0900-\u097f\ua8e0-\ua8ff\ufb1d-\ufdff\ufe70-\ufeff]")
_RTL_CLASSES = frozenset({"R", "AL"})
_RUN_KEEPING = frozenset("ZPNSMC")  # Unicode general categories that are not letters

_lock = threading.Lock()


@dataclass
class _LoadedFont:
    name: str
    code_points: frozenset[int]


class FontChain:
    """Registered fonts in fallback order; `markup()` turns plain text into Paragraph markup that uses them."""

    def __init__(self, primary: Sequence[_LoadedFont], fallback_paths: Sequence[Path]) -> None:
        self._fonts = list(primary)
        self._pending = [Path(path) for path in fallback_paths if Path(path).is_file()]
        self._missing_logged = False

    def markup(self, text: str) -> str:
        """XML-escaped Paragraph markup of `text`, line breaks kept, with a <font> tag around runs the primary font
        lacks."""
        lines = _BREAKS.split(text)
        return "<br/>".join(self._markup_line(line) for line in lines)

    def _markup_line(self, text: str) -> str:
        pieces: list[str] = []
        for font_name, run in self._runs(visual_line(text)):
            escaped = escape(run)
            pieces.append(escaped if font_name == SANS else f'<font name="{font_name}">{escaped}</font>')
        return "".join(pieces)

    def _runs(self, text: str) -> Iterable[tuple[str, str]]:
        """Consecutive characters grouped by the first font that has them; spaces join the current run."""
        current_font, current = SANS, []
        for char in text:
            # Spaces, punctuation, digits, marks and joiners stay in the current font when it has them: a shaped
            # word must not change font (reportlab shapes a word with one font).
            keeps_run = unicodedata.category(char)[0] in _RUN_KEEPING and self._covers(current_font, char)
            font_name = current_font if keeps_run else self._font_for(char)
            if font_name != current_font and current:
                yield current_font, "".join(current)
                current = []
            current_font = font_name
            current.append(char)
        if current:
            yield current_font, "".join(current)

    def _covers(self, font_name: str, char: str) -> bool:
        return any(font.name == font_name and ord(char) in font.code_points for font in self._fonts)

    def _font_for(self, char: str) -> str:
        code = ord(char)
        for font in self._fonts:
            if code in font.code_points:
                return font.name
        while self._pending:  # load the next fallback font only when a character needs it
            loaded = _load_fallback(self._pending.pop(0))
            if loaded is not None:
                self._fonts.append(loaded)
                if code in loaded.code_points:
                    return loaded.name
        if not self._missing_logged:
            logger.warning("A report contains characters that no available font covers; they print as boxes.")
            self._missing_logged = True
        return SANS

    def has_wrap_anywhere_text(self, text: str) -> bool:
        """True when `text` is mostly Chinese or Japanese, written without spaces: its lines break between characters
        (with reportlab's CJK rules, which keep closing punctuation off a line start).

        Text that is mostly in other scripts breaks at spaces, and a CJK run longer than a line is split by
        reportlab's splitLongWords; CJK line breaking of such mixed text is slow (one fragment per font change) and
        gains nothing."""
        cjk = len(_CJK_TEXT.findall(text))
        if cjk == 0:
            return False
        letters = sum(1 for char in text if not char.isspace())
        return cjk * 2 > letters


def needs_shaping(text: str) -> bool:
    """Whether `text` has letters that only print right when shaped (Arabic, Hebrew, Devanagari)."""
    return _SHAPED_TEXT.search(text) is not None


def _direction(word: str) -> str | None:
    """The word's direction ("rtl" or "ltr") by its first strong character; None for digits and punctuation."""
    for char in word:
        kind = unicodedata.bidirectional(char)
        if kind in _RTL_CLASSES:
            return "rtl"
        if kind == "L":
            return "ltr"
    return None


def visual_line(line: str) -> str:
    """One line's words in the order they are seen: within a right-to-left run the last word comes first, and a
    line that starts right to left is laid out from the right. Letters inside a word stay in reading order (shaping
    arranges them). Lines without right-to-left letters come back unchanged."""
    if not any(unicodedata.bidirectional(char) in _RTL_CLASSES for char in line):
        return line
    words = line.split(" ")
    directions = [_direction(word) for word in words]
    base = next((d for d in directions if d), "ltr")
    resolved = _resolve_neutrals(directions, base)
    runs: list[tuple[str, list[str]]] = []
    for word, direction in zip(words, resolved, strict=True):
        if runs and runs[-1][0] == direction:
            runs[-1][1].append(word)
        else:
            runs.append((direction, [word]))
    ordered = [words_ if d == "ltr" else words_[::-1] for d, words_ in runs]
    return " ".join(word for run in (ordered[::-1] if base == "rtl" else ordered) for word in run)


def _resolve_neutrals(directions: list[str | None], base: str) -> list[str]:
    """A digit or punctuation word between two words of one direction takes it; elsewhere the line's direction."""
    resolved: list[str] = []
    for index, direction in enumerate(directions):
        if direction is None:
            before = next((d for d in reversed(directions[:index]) if d), base)
            after = next((d for d in directions[index + 1 :] if d), base)
            direction = before if before == after else base
        resolved.append(direction)
    return resolved


def font_chain(extra_font_paths: Sequence[Path] = ()) -> FontChain:
    """The bundled fonts (registered once per process), with extra and system fonts as lazy fallbacks."""
    bundled = [_register(name, path) for name, path in BUNDLED_FONTS.items()]
    primary = [font for font in bundled if font.name != SANS_BOLD]
    return FontChain(primary, [*extra_font_paths, *SYSTEM_FALLBACK_FONT_PATHS])


_registered: dict[str, _LoadedFont] = {}


def _register(name: str, path: Path, subfont_index: int = 0) -> _LoadedFont:
    with _lock:
        if name in _registered:
            return _registered[name]
        font = TTFont(name, str(path), subfontIndex=subfont_index)
        pdfmetrics.registerFont(font)
        _add_family_mapping(name)
        loaded = _LoadedFont(name, frozenset(font.face.charToGlyph))
        _registered[name] = loaded
        return loaded


def _add_family_mapping(name: str) -> None:
    """<b> inside a paragraph resolves through reportlab's family table: the sans family has a bold face, every other
    font stands in for its own bold and italic. Regular entries go last, as each mapping also sets the reverse one."""
    if name == SANS_BOLD:
        return  # mapped as the bold face of SANS
    bold = SANS_BOLD if name == SANS else name
    for is_bold, is_italic in ((1, 1), (0, 1), (1, 0), (0, 0)):
        addMapping(name, is_bold, is_italic, bold if is_bold else name)


def _load_fallback(path: Path) -> _LoadedFont | None:
    name = f"ReportFallback-{path.stem}"
    try:
        return _register(name, path)
    except (TTFError, OSError) as error:  # a damaged or CFF-outline font: skip it, keep rendering
        logger.warning("Skipping fallback font %s: %s", path, error)
        return None

"""Rebuild the bundled report fonts: small subsets of DejaVu Sans, Droid Sans Fallback, Noto Sans Arabic and Noto
Sans Devanagari.

    python reports/fonts/make_subsets.py --dejavu-dir /usr/share/fonts/truetype/dejavu \
        --droid /usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf --noto-dir /usr/share/fonts/truetype/noto

Sources are the Debian packages fonts-dejavu-core, fonts-droid-fallback and fonts-noto-core. The subsets keep
what patient names and clinical text need: Latin (incl. Vietnamese), Greek, Cyrillic, Hebrew, Arabic and common
symbols from DejaVu; from Droid Sans Fallback the CJK characters of GB 2312, JIS X 0208, KS X 1001 hanja, Big5
level 1, all 11,172 Hangul syllables, kana and CJK punctuation; the Noto subsets their script blocks. DejaVu and Noto
keep the OpenType layout features shaping needs (Droid's are dropped); hinting is dropped. Needs fontTools
(installed with matplotlib); the workstation itself never imports this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

FONT_DIR = Path(__file__).resolve().parent

# Latin incl. extended and Vietnamese, IPA-free Greek and Cyrillic (+ supplement), punctuation, currency, letterlike
# symbols, arrows, mathematical operators, geometric shapes (for check marks and bullets).
LATIN_GREEK_CYRILLIC_RANGES = (
    (0x0020, 0x024F),
    (0x0300, 0x036F),
    (0x0370, 0x03FF),
    (0x0400, 0x052F),
    (0x1E00, 0x1FFF),
    (0x2000, 0x206F),
    (0x20A0, 0x20BF),
    (0x2100, 0x21FF),
    (0x2200, 0x22FF),
    (0x25A0, 0x25FF),
    (0x2610, 0x2613),
    (0x2713, 0x2717),
)
CJK_BLOCK_RANGES = (
    (0x0020, 0x0020),  # the space, so a space between two CJK words stays in the CJK run
    (0x00A0, 0x00A0),
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x3130, 0x318F),  # Hangul compatibility jamo
    (0xAC00, 0xD7A3),  # every Hangul syllable
    (0xFF00, 0xFFEF),  # half- and full-width forms
)
BIG5_LEVEL1 = (0xA440, 0xC67E)
# Scripts that need shaping (reportlab + uharfbuzz): each subset keeps its OpenType layout tables. The space, no-break
# space, zero-width (non-)joiners and the dotted circle (drawn for a mark without its base) come along.
SHARED_SHAPING = ((0x0020, 0x0020), (0x00A0, 0x00A0), (0x200C, 0x200F), (0x25CC, 0x25CC))
ARABIC_RANGES = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))
HEBREW_RANGES = ((0x0590, 0x05FF), (0xFB1D, 0xFB4F))
DEVANAGARI_RANGES = ((0x0900, 0x097F), (0xA8E0, 0xA8FF), (0x1CD0, 0x1CFF))
# DejaVu Sans draws Hebrew and most Arabic itself, so a right-to-left word and its punctuation stay in one font (a
# shaped word cannot change font); Noto Sans Arabic covers the Arabic letters DejaVu lacks, Noto Sans Devanagari
# Devanagari (with its own ASCII punctuation and digits).
NOTO_SHAPED = {  # Debian fonts-noto-core file -> (bundled subset, code point ranges)
    "NotoSansArabic-Regular.ttf": ("NotoSansArabic-subset.ttf", ARABIC_RANGES),
    "NotoSansDevanagari-Regular.ttf": ("NotoSansDevanagari-subset.ttf", (*DEVANAGARI_RANGES, (0x0021, 0x007E))),
}


def expand(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {code for start, end in ranges for code in range(start, end + 1)}


def encodable(codec: str) -> set[int]:
    """CJK code points a legacy national character set can encode (a proxy for characters in common use)."""
    found = set()
    for code in range(0x2E80, 0xFFFF):
        try:
            encoded = chr(code).encode(codec)
        except UnicodeEncodeError:
            continue
        if codec != "big5" or BIG5_LEVEL1[0] <= int.from_bytes(encoded, "big") <= BIG5_LEVEL1[1]:
            found.add(code)
    return found


def cjk_code_points() -> set[int]:
    return (
        expand(CJK_BLOCK_RANGES)
        | encodable("gb2312")
        | encodable("shift_jis")
        | encodable("euc_kr")
        | (encodable("big5"))
    )


def write_subset(source: Path, target: Path, code_points: set[int], *, shaped: bool = False) -> None:
    """Keep `code_points`; `shaped` keeps fontTools' default layout features (those shaping needs; discretionary
    ligatures such as Arabic honorifics are not among them, so a name prints as typed)."""
    options = subset.Options()
    options.hinting = False
    if not shaped:
        options.layout_features = []
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = TTFont(source)
    covered = set(font.getBestCmap())
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(code_points & covered))
    subsetter.subset(font)
    font.save(target)
    print(f"{target.name}: {len(code_points & covered)} characters, {target.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dejavu-dir", type=Path, default=Path("/usr/share/fonts/truetype/dejavu"))
    parser.add_argument(
        "--droid", type=Path, default=Path("/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf")
    )
    parser.add_argument("--noto-dir", type=Path, default=Path("/usr/share/fonts/truetype/noto"))
    args = parser.parse_args()
    for source, (target, ranges) in NOTO_SHAPED.items():
        write_subset(args.noto_dir / source, FONT_DIR / target, expand(ranges + SHARED_SHAPING), shaped=True)
    latin = expand(LATIN_GREEK_CYRILLIC_RANGES + HEBREW_RANGES + ARABIC_RANGES + SHARED_SHAPING)
    write_subset(args.dejavu_dir / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-subset.ttf", latin, shaped=True)
    write_subset(args.dejavu_dir / "DejaVuSans-Bold.ttf", FONT_DIR / "DejaVuSans-Bold-subset.ttf", latin, shaped=True)
    write_subset(args.droid, FONT_DIR / "DroidSansFallback-subset.ttf", cjk_code_points())


if __name__ == "__main__":
    main()

"""ui: the Streamlit workstation (`streamlit run app.py`); it reaches the backend over HTTP only.

Public surface:
- `BackendClient`, `BackendError` (ui.client): the one HTTP client to the backend contract
- `PAGES`, `PageSpec`, `build_navigation`, `pages_for` (ui.registry): a new page is one module plus one line
- `run_app` (ui.shell): the frame app.py runs
"""

from ui.client import BackendClient, BackendError
from ui.registry import PAGES, PageSpec, build_navigation, pages_for
from ui.shell import run_app

__all__ = ["PAGES", "BackendClient", "BackendError", "PageSpec", "build_navigation", "pages_for", "run_app"]

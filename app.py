"""Entry point of the workstation UI: `streamlit run app.py` (the backend URL comes from settings.BACKEND_URL)."""

from ui.shell import run_app

run_app()

"""The frame around every page: page config, who is signed in, the sidebar, the navigation and the error guard."""

from __future__ import annotations

import logging

import streamlit as st

from ui.client import BackendError
from ui.registry import build_navigation
from ui.session import SIGNED_OUT, Identity, backend_url, handle_auth_error, log_out, resolve_identity

logger = logging.getLogger("cxr.ui")

APP_TITLE = "CXR Workstation"
# Streamlit's default top padding pushes results below the fold on a laptop screen; a reading room wants them up.
COMPACT_CSS = "<style>[data-testid='stMainBlockContainer'] { padding-top: 3rem; padding-bottom: 2rem; }</style>"


def render_sidebar(identity: Identity | None) -> None:
    with st.sidebar:
        if identity is None:
            st.caption(f"Backend: {backend_url()}")
            return
        if identity.anonymous:
            st.caption("Working as an anonymous radiologist: this backend has no user accounts.")
        else:
            st.markdown(f"Signed in as **{identity.username}** · {identity.role}")
            if st.button("Log out", icon=":material/logout:", key="logout"):
                log_out()
                st.rerun()
        st.caption(f"Backend: {backend_url()}")
        st.caption("AI decision support for clinicians; not a diagnosis.")


def run_guarded(page: st.Page) -> None:
    """Run the page; backend errors that escaped it and UI bugs become a message, never a traceback."""
    try:
        page.run()
    except BackendError as error:
        handle_auth_error(error)  # reruns to the login page on 401
        st.error(error.message, icon=":material/error:")
    except Exception:
        logger.exception("UI page %s failed", page.title)
        st.error("Something went wrong while drawing this page; the error has been logged. Reload to try again.")


def run_app() -> None:
    st.set_page_config(page_title=APP_TITLE, page_icon=":material/radiology:", layout="wide")
    st.html(COMPACT_CSS)
    identity = resolve_identity()
    render_sidebar(identity)
    page = build_navigation(identity.role if identity else SIGNED_OUT)
    run_guarded(page)

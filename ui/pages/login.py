"""Log in: user name and password against `POST /v1/auth/login`; the token then rides on every request."""

from __future__ import annotations

import streamlit as st

from ui.client import BackendError
from ui.session import ANONYMOUS, AUTH_ENABLED_KEY, NOTICE_KEY, Identity, backend_url, sign_in
from ui.session import client as backend_client


def attempt_login(username: str, password: str) -> str | None:
    """Sign in and return None, or return the message to show under the form."""
    if not username.strip() or not password:
        return "Enter your user name and password."
    try:
        result = backend_client().login(username.strip(), password)
    except BackendError as error:
        if error.route_missing:  # the backend has no user accounts: work as the anonymous radiologist
            st.session_state[AUTH_ENABLED_KEY] = False
            sign_in(ANONYMOUS)
            return None
        return error.message
    sign_in(
        Identity(
            username=username.strip(),
            role=result.role,
            token=result.access_token,
            expires_at=result.expires_at if result.expires_in > 0 else None,
        )
    )
    return None


def render() -> None:
    _, middle, _ = st.columns([1, 1.2, 1])
    with middle:
        st.title("CXR Workstation")
        st.caption("Chest X-ray AI decision support. Log in with your workstation account.")
        if notice := st.session_state.get(NOTICE_KEY):
            st.info(notice, icon=":material/info:")
        if st.session_state.get(AUTH_ENABLED_KEY) is None:
            st.warning(
                f"The backend at {backend_url()} does not answer yet; you can still try to log in.",
                icon=":material/cloud_off:",
            )
        with st.form("login"):
            username = st.text_input("User name", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            submitted = st.form_submit_button("Log in", type="primary", width="stretch", icon=":material/login:")
        if submitted:
            error = attempt_login(username, password)
            if error is None:
                st.rerun()
            st.error(error, icon=":material/error:")


if __name__ == "__main__":
    render()

"""Who is signed in and the backend client that carries their token; all of it lives in `st.session_state`.

When the backend has no user accounts (its login route answers 404) the workstation runs as an anonymous
radiologist; as soon as the backend starts refusing that (401), the session drops back to the login page.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import httpx
import streamlit as st

from settings import get_settings
from ui.client import DEFAULT_TIMEOUT, BackendClient, BackendError

RADIOLOGIST, ANNOTATOR, ADMIN = "radiologist", "annotator", "admin"
SENIOR = "senior"  # an annotator who also adjudicates when two expert reads disagree
SIGNED_OUT = "signed-out"  # the pseudo-role of a visitor who has not logged in

IDENTITY_KEY = "identity"
NOTICE_KEY = "auth_notice"
AUTH_ENABLED_KEY = "auth_enabled"


@dataclass(frozen=True)
class Identity:
    username: str
    role: str
    token: str | None = None
    expires_at: float | None = None
    anonymous: bool = False

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


ANONYMOUS = Identity(username="anonymous", role=RADIOLOGIST, anonymous=True)


@st.cache_resource
def shared_http() -> httpx.Client:
    """One pooled connection set for every session; it holds no credentials (tokens go per request)."""
    return httpx.Client(timeout=DEFAULT_TIMEOUT)


def backend_url() -> str:
    return get_settings().backend_url


def client() -> BackendClient:
    identity = st.session_state.get(IDENTITY_KEY)
    token = identity.token if isinstance(identity, Identity) else None
    return BackendClient(backend_url(), token=token, http=shared_http())


def current_identity() -> Identity | None:
    identity = st.session_state.get(IDENTITY_KEY)
    if isinstance(identity, Identity) and identity.expired():
        sign_out("Your session has expired; please log in again.")
        return None
    return identity if isinstance(identity, Identity) else None


def current_role() -> str:
    identity = current_identity()
    return identity.role if identity else SIGNED_OUT


def sign_in(identity: Identity) -> None:
    st.session_state[IDENTITY_KEY] = identity
    st.session_state.pop(NOTICE_KEY, None)


def sign_out(notice: str | None = None) -> None:
    """Forget everything of this session (token, cases, images); keep only the reason to show on the login page."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if notice:
        st.session_state[NOTICE_KEY] = notice


def log_out() -> None:
    """End the token on the backend (so a copied token is useless), then forget this session; a backend that cannot
    be reached does not keep the user signed in here."""
    with contextlib.suppress(BackendError):  # unreachable: the token still expires on its own
        client().logout()
    sign_out("You have logged out.")


def resolve_identity() -> Identity | None:
    """The signed-in identity; with no login route on the backend, the anonymous radiologist."""
    identity = current_identity()
    if identity is not None:
        return identity
    enabled = st.session_state.get(AUTH_ENABLED_KEY)
    if enabled is None:
        try:
            enabled = client().auth_enabled()
        except BackendError:
            return None  # unreachable: the login page says so, and the next run probes again
        st.session_state[AUTH_ENABLED_KEY] = enabled
    if enabled:
        return None
    sign_in(ANONYMOUS)
    return ANONYMOUS


def handle_auth_error(error: BackendError) -> None:
    """A 401 means the token is gone (expired, revoked, or auth was switched on): back to the login page."""
    if error.unauthorized:
        sign_out("The backend asked you to log in again (your session ended or login is now required).")
        st.session_state[AUTH_ENABLED_KEY] = True
        st.rerun()


ROUTES_KEY = "backend_routes"
ROUTES_TTL_S = 60.0  # the backend grows while the workstation runs; look again after a minute


def backend_offers(method: str, path_template: str) -> bool:
    """Whether the backend's OpenAPI lists the route; True when that cannot be known (the call will explain)."""
    checked_at, routes = st.session_state.get(ROUTES_KEY, (0.0, None))
    if time.time() - checked_at > ROUTES_TTL_S:
        try:
            routes = client().routes()
        except BackendError:
            routes = None
        st.session_state[ROUTES_KEY] = (time.time(), routes)
    return routes is None or method.upper() in routes.get(path_template, set())

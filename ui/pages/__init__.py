"""ui.pages: one Streamlit page script per module, registered in `ui.registry.PAGES`; each exposes `render()`."""

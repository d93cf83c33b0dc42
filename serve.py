"""What the server runs: ``streamlit run serve.py`` serves app.py and pages/ as Streamlit does,
with the base-URL middleware of :mod:`ui.asgi` (deep links without console 404s).

AppTest and notebooks use app.py directly; this file only wraps it for the server.
"""

import streamlit as st
from starlette.middleware import Middleware

from ui.asgi import BaseUrlMiddleware

app = st.App("app.py", middleware=[Middleware(BaseUrlMiddleware)])

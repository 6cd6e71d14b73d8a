"""The web dashboard: a single-page application served under /train/ (see views.py)."""

"""The web console at ``/ui``: server-rendered pages over the modules' contracts.

It calls modules only through the contract clients the composition root hands it (local or
remote), never a module's code; it authenticates browsers with an API key kept in a cookie.
"""

from app.console._app import OWN_AUTH_PATHS, PREFIX, console_routes

__all__ = ["OWN_AUTH_PATHS", "PREFIX", "console_routes"]

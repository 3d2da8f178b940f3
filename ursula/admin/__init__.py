"""The control plane: the Klein app served on ``[node] admin_listen`` (metrics, health, ready,
group status, leadership transfer, snapshots, drain, backup images: ``ursula.admin.app``) and the
``ursula-admin`` command line that talks to it (``ursula.admin.cli``, over HTTP with treq:
``ursula.admin.client``).

May import: Twisted, Klein (and werkzeug, its router), ``ursula.http.metrics``, ``ursula.core``
(interfaces).
"""

__all__ = ["AdminApp", "admin_site"]


def __getattr__(name):
    """``AdminApp`` and ``admin_site`` are loaded on first use: ``ursula-admin`` imports this
    package without the Klein app and the core it serves."""
    if name in __all__:
        from ursula.admin import app
        return getattr(app, name)
    raise AttributeError(f"module 'ursula.admin' has no attribute {name!r}")

"""The control plane: the Klein app served on ``[node] admin_listen`` (metrics, health, ready,
group status).

May import: Twisted, Klein (and werkzeug, its router), ``ursula.http.metrics``, ``ursula.core``
(interfaces).
"""

from ursula.admin.app import AdminApp, admin_site

__all__ = ["AdminApp", "admin_site"]

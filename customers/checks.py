"""Deploy checks of the sign-in throttle's settings (``manage.py check --deploy``)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def proxy_without_forwarded_addresses(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Behind a proxy (SECURE_PROXY_SSL_HEADER) with NUM_PROXIES 0, every client has the
    proxy's address: one guesser would lock every account out for everyone."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and not settings.NUM_PROXIES:
        return [
            checks.Warning(
                "DJANGO_SECURE_PROXY_SSL_HEADER is set but DJANGO_NUM_PROXIES is 0: the "
                "sign-in throttle counts every client as the proxy's address.",
                hint="Set DJANGO_NUM_PROXIES to the number of proxies that append to "
                "X-Forwarded-For.",
                id="customers.W001",
            )
        ]
    return []

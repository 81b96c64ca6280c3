"""Every custom admin page and every admin action checks a permission, not only is_staff."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.factories import approve_kyc, borrow, enable_wallet_bnpl, make_customer

pytestmark = pytest.mark.django_db

# The permission each custom admin page needs ("app_label.codename").
CUSTOM_ADMIN_PAGES = {
    "admin:wallet_walletdebt_explain": "wallet.view_walletdebt",
    "admin:collections_debitrun_start": "collections.change_debitrun",
    "reports-collections-admin": "collections.view_debitattempt",
    "admin:wallet_walletdebt_write_off": "wallet.change_walletdebt",
}


def open_debt() -> list[int]:
    enable_wallet_bnpl()
    return [borrow(approve_kyc(make_customer()), "80.00")]


# Pages about one object: how to make one for the page's URL.
PAGE_ARGUMENTS = {"admin:wallet_walletdebt_write_off": open_debt}

SITE_PAGES = {
    "index",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "autocomplete",
    "jsi18n",
    "view_on_site",
    "app_list",
}
MODEL_PAGES = ("changelist", "add", "history", "delete", "change")
# Django's own extra pages, which check their permission themselves.
FRAMEWORK_PAGES = {"auth_user_password_change"}


def named_patterns(resolver: URLResolver, prefix: str = "", namespace: str = ""):
    """(path, "namespace:name") of every named URL, recursively."""
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from named_patterns(pattern, route, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield route, f"{namespace}:{pattern.name}" if namespace else pattern.name


def custom_admin_pages() -> set[str]:
    standard = {f"admin:{name}" for name in SITE_PAGES | FRAMEWORK_PAGES}
    for model in admin.site._registry:
        opts = model._meta
        standard |= {f"admin:{opts.app_label}_{opts.model_name}_{p}" for p in MODEL_PAGES}
    return {
        name
        for route, name in named_patterns(get_resolver())
        if route.lstrip("^").startswith("admin/") and name not in standard
    }


def staff(django_user_model, username: str, *permissions: str):
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "pw")
    user.is_staff = True
    user.save()
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def test_every_custom_admin_page_is_listed_with_its_permission():
    assert custom_admin_pages() == set(CUSTOM_ADMIN_PAGES)


@pytest.mark.parametrize(("name", "permission"), sorted(CUSTOM_ADMIN_PAGES.items()))
def test_a_custom_admin_page_refuses_staff_without_its_permission(
    client, django_user_model, name, permission
):
    url = reverse(name, args=PAGE_ARGUMENTS.get(name, list)())
    client.force_login(staff(django_user_model, "clerk"))
    assert client.get(url).status_code == 403
    client.force_login(staff(django_user_model, "permitted", permission))
    assert client.get(url).status_code == 200


def test_every_admin_action_requires_a_permission():
    unguarded = [
        f"{model._meta.label}.{name}"
        for model, model_admin in admin.site._registry.items()
        for func, name, _ in model_admin._get_base_actions()
        if not getattr(func, "allowed_permissions", None)
    ]
    assert unguarded == []


def test_periodic_task_actions_are_offered_to_who_may_change_them(client, django_user_model):
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="tick", task="core.deliver_emails", interval=every_minute)
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    client.force_login(staff(django_user_model, "viewer", "django_celery_beat.view_periodictask"))
    assert b"Run selected tasks" not in client.get(url).content
    client.force_login(
        staff(django_user_model, "operator", "django_celery_beat.change_periodictask")
    )
    assert b"Run selected tasks" in client.get(url).content

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from core.models import AuditEntry
from customers.models import Customer, KycEvent, KycStatus

pytestmark = pytest.mark.django_db


def sign_up(api, **overrides):
    body = {
        "email": "Dana@Example.com",
        "password": "a-long-passphrase",
        "first_name": "Dana",
        **overrides,
    }
    return api.post("/api/v1/customers", body, format="json")


def test_sign_up_then_obtain_a_token(api):
    response = sign_up(api)
    assert response.status_code == 201, response.json()
    assert response.json()["email"] == "dana@example.com"
    assert response.json()["kyc_status"] == "pending"
    token = api.post(
        "/api/v1/auth/token",
        {"email": "dana@example.com", "password": "a-long-passphrase"},
        format="json",
    )
    assert token.status_code == 200
    assert token.json()["customer_id"] == response.json()["id"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert api.get("/api/v1/orders").status_code == 200


def test_sign_up_refusals_write_nothing(api, unchanged_db):
    assert sign_up(api).status_code == 201
    check = unchanged_db()
    taken = sign_up(api, email="DANA@example.com")
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "customers.email_taken"
    weak = sign_up(api, email="eve@example.com", password="123")
    assert weak.status_code == 400
    assert "password" in weak.json()["error"]["fields"]
    bad_email = sign_up(api, email="not-an-email")
    assert bad_email.status_code == 400
    assert "email" in bad_email.json()["error"]["fields"]
    check()


def test_wrong_password_gets_no_token(api):
    sign_up(api)
    response = api.post(
        "/api/v1/auth/token", {"email": "dana@example.com", "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "auth.invalid_credentials"


def test_admin_approves_and_rejects_kyc_with_history_and_audit(admin_client, admin_user, api):
    sign_up(api)
    customer = Customer.objects.get()
    url = reverse("admin:customers_customer_changelist")
    response = admin_client.post(
        url, {"action": "approve_kyc", "_selected_action": [customer.pk]}, follow=True
    )
    assert response.status_code == 200
    customer.refresh_from_db()
    assert customer.kyc_status == KycStatus.APPROVED
    admin_client.post(url, {"action": "reject_kyc", "_selected_action": [customer.pk]})
    customer.refresh_from_db()
    assert customer.kyc_status == KycStatus.REJECTED
    history = list(
        KycEvent.objects.filter(customer=customer)
        .order_by("decided_at", "id")
        .values_list("status", "decided_by")
    )
    assert history == [("pending", None), ("approved", admin_user.pk), ("rejected", admin_user.pk)]
    audit = list(
        AuditEntry.objects.filter(target_id=str(customer.pk))
        .order_by("id")
        .values_list("action", "actor")
    )
    assert audit == [("kyc.approved", admin_user.pk), ("kyc.rejected", admin_user.pk)]
    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert page.status_code == 200
    assert b"Rejected in the admin" in page.content


def test_kyc_required_features_are_managed_in_admin_and_audited(admin_client):
    url = reverse("admin:customers_kycrequirement_add")
    response = admin_client.post(url, {"feature": "withdrawal"})
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action="kyc.require_feature").count() == 1
    assert User.objects.count() == 1  # the admin only

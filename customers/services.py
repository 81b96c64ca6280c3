"""Every write to customers: sign-up, KYC decisions, KYC-gated features."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, transaction

from core import clock
from core.audit import audit_record
from customers import selectors
from customers.errors import EmailTaken, KycRequired
from customers.models import Customer, Feature, KycEvent, KycRequirement, KycStatus, Tier


def customer_create(
    *,
    email: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    tier: str = Tier.STANDARD,
) -> Customer:
    """Sign a customer up: a Django user (username = email) and its profile."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email).lower()
    try:
        with transaction.atomic():
            if user_model.objects.filter(username=email).exists():
                raise EmailTaken(fields={"email": [EmailTaken.default_message]})
            user = user_model.objects.create_user(
                username=email,
                email=email,
                password=password,
                first_name=first_name,
                last_name=last_name,
            )
            customer = Customer.objects.create(user=user, tier=tier, created_at=clock.now())
            KycEvent.objects.create(
                customer=customer,
                status=KycStatus.PENDING,
                decided_at=customer.created_at,
                note="Signed up",
            )
    except IntegrityError:
        # A concurrent sign-up with the same email won the unique username.
        raise EmailTaken(fields={"email": [EmailTaken.default_message]}) from None
    return customer


def _kyc_decide(*, customer_id: int, status: str, actor: AbstractUser, note: str) -> Customer:
    customer = Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
    previous = customer.kyc_status
    now = clock.now()
    customer.kyc_status = status
    customer.kyc_updated_at = now
    customer.save(update_fields=["kyc_status", "kyc_updated_at"])
    KycEvent.objects.create(
        customer=customer, status=status, decided_by=actor, decided_at=now, note=note
    )
    audit_record(
        actor=actor,
        action=f"kyc.{status}",
        target=customer,
        changes={"kyc_status": [previous, status]},
        note=note,
    )
    return customer


@transaction.atomic
def customer_kyc_approve(*, customer_id: int, actor: AbstractUser, note: str = "") -> Customer:
    return _kyc_decide(customer_id=customer_id, status=KycStatus.APPROVED, actor=actor, note=note)


@transaction.atomic
def customer_kyc_reject(*, customer_id: int, actor: AbstractUser, note: str = "") -> Customer:
    return _kyc_decide(customer_id=customer_id, status=KycStatus.REJECTED, actor=actor, note=note)


def customer_require_kyc_for(*, customer: Customer, feature: Feature) -> None:
    """Raise ``customers.kyc_required`` if ``feature`` needs KYC and the customer lacks it."""
    if not customer.is_kyc_approved and selectors.feature_requires_kyc(feature):
        raise KycRequired(
            f"{Feature(feature).label} needs an approved KYC; the customer's KYC is "
            f"{customer.kyc_status}.",
            extra={"feature": str(feature), "kyc_status": customer.kyc_status},
        )


@transaction.atomic
def kyc_requirement_set(*, feature: Feature, required: bool, actor: AbstractUser) -> None:
    """Put ``feature`` behind KYC, or lift that requirement. Audited."""
    if required:
        requirement, created = KycRequirement.objects.get_or_create(
            feature=feature, defaults={"created_at": clock.now()}
        )
        if created:
            audit_record(
                actor=actor,
                action="kyc.require_feature",
                target=requirement,
                changes={"feature": str(feature), "required": True},
            )
    else:
        for requirement in KycRequirement.objects.filter(feature=feature):
            audit_record(
                actor=actor,
                action="kyc.unrequire_feature",
                target=requirement,
                changes={"feature": str(feature), "required": False},
            )
            requirement.delete()

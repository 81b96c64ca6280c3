from __future__ import annotations

from customers.models import Feature, KycRequirement


def feature_requires_kyc(feature: Feature) -> bool:
    return KycRequirement.objects.filter(feature=feature).exists()


def kyc_required_features() -> list[str]:
    return list(KycRequirement.objects.order_by("feature").values_list("feature", flat=True))

from core.errors import Conflict, PermissionDenied


class KycRequired(PermissionDenied):
    code = "customers.kyc_required"
    default_message = "This feature needs an approved identity verification (KYC)."


class EmailTaken(Conflict):
    code = "customers.email_taken"
    default_message = "A customer with this email already exists."

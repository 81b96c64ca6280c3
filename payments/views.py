"""``/webhooks/<provider>/``: verify, store once, answer at once; process after commit."""

from __future__ import annotations

import json
import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import clock
from core.api.errors import error_body
from payments import crypto, webhooks
from payments.errors import WebhookRejected
from payments.models import ProviderAccount
from payments.selectors import webhook_url
from payments.services import webhook_event_store
from payments.tasks import process_webhook_event


def _secrets(account: ProviderAccount) -> list[str]:
    current = [crypto.decrypt(account.webhook_secret_encrypted)]
    until = account.previous_secret_valid_until
    if account.previous_webhook_secret_encrypted and until and until > clock.now():
        current.append(crypto.decrypt(account.previous_webhook_secret_encrypted))
    return [s for s in current if s]


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, provider: str) -> JsonResponse:
    account = ProviderAccount.objects.filter(provider=provider, enabled=True).first()
    if account is None:
        return JsonResponse(
            error_body("webhooks.unknown_provider", f"No enabled provider account {provider!r}."),
            status=404,
        )
    body = request.body
    if provider == "klarna" and webhooks.KLARNA_SIGNATURE in request.headers:
        return _klarna_signed(request, account, body)
    if provider == "afterpay" and webhooks.AFTERPAY_SIGNATURE in request.headers:
        return _afterpay_signed(request, account, body)
    if provider in webhooks.UNSIGNED:
        try:
            payload = webhooks.unsigned_event(body)
        except WebhookRejected as exc:
            return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=400)
        except ValueError:
            return JsonResponse(
                error_body("request.malformed", "The body is not JSON."), status=400
            )
        event, created = webhook_event_store(provider=provider, payload=payload)
        if not created and event.status != event.Status.PROCESSED:
            # A redelivery of what is not settled yet: read the order back again.
            process_webhook_event.delay(event.pk)
        return JsonResponse({"received": True, "duplicate": not created, "event": event.pk})
    try:
        webhooks.verify(
            header=request.headers.get(webhooks.HEADER),
            body=body,
            secrets=_secrets(account),
            now=time.time(),
        )
        payload = json.loads(body)
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("id"), str)
            and isinstance(payload.get("type"), str)
        ):
            raise WebhookRejected(
                "The event needs a string id and type.",
                code="webhooks.malformed_event",
                fields={"id": ["Required."], "type": ["Required."]},
            )
    except WebhookRejected as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=400)
    except ValueError:
        return JsonResponse(error_body("request.malformed", "The body is not JSON."), status=400)
    return _stored(provider, payload)


def _stored(provider: str, payload: dict) -> JsonResponse:
    """Store a verified event once; a redelivery of one not processed yet (failed for a
    passing cause, or lost on the way to the worker) is processed again."""
    event, created = webhook_event_store(provider=provider, payload=payload)
    if not created and event.status != event.Status.PROCESSED:
        process_webhook_event.delay(event.pk)
    return JsonResponse({"received": True, "duplicate": not created, "event": event.pk})


def _klarna_signed(request: HttpRequest, account: ProviderAccount, body: bytes) -> JsonResponse:
    """Klarna's signed webhooks (disputes): verify, store once, answer at once."""
    try:
        webhooks.verify_klarna(
            header=request.headers.get(webhooks.KLARNA_SIGNATURE),
            body=body,
            secrets=_secrets(account),
        )
        payload = webhooks.klarna_event(body)
    except WebhookRejected as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=400)
    except ValueError:
        return JsonResponse(error_body("request.malformed", "The body is not JSON."), status=400)
    return _stored(account.provider, payload)


def _afterpay_signed(request: HttpRequest, account: ProviderAccount, body: bytes) -> JsonResponse:
    """Afterpay's signed dispute notifications: verify, store once, answer at once."""
    try:
        webhooks.verify_afterpay(
            header=request.headers.get(webhooks.AFTERPAY_SIGNATURE),
            date=request.headers.get(webhooks.AFTERPAY_DATE),
            # Where the provider sends it, as registered there (behind a TLS proxy the
            # request's own URL is not it).
            url=webhook_url(account.provider),
            body=body,
            secrets=_secrets(account),
            now=time.time(),
        )
        payload = webhooks.afterpay_event(body)
    except WebhookRejected as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=400)
    except ValueError:
        return JsonResponse(error_body("request.malformed", "The body is not JSON."), status=400)
    return _stored(account.provider, payload)

"""Server-to-server authentication for sales channels.

A channel's server sends ``Authorization: Api-Key <key>`` and ``X-Customer-Id: <id>``; the
request then runs as that customer, and ``request.auth`` is the channel, which limits what
it sees to the orders the channel placed.
"""

from __future__ import annotations

import hmac

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from customers.models import Customer
from oms.models import Channel
from oms.services import hash_api_key

KEYWORD = "Api-Key"


class ChannelKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != KEYWORD:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization: Api-Key <key>.")
        raw_key = header[1]
        parts = raw_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "ch":
            raise exceptions.AuthenticationFailed("Malformed channel API key.")
        channel = Channel.objects.filter(api_key_prefix=parts[1], active=True).first()
        if channel is None or not hmac.compare_digest(channel.api_key_hash, hash_api_key(raw_key)):
            raise exceptions.AuthenticationFailed("Unknown or inactive channel API key.")
        customer_id = request.headers.get("X-Customer-Id", "")
        if not (customer_id.isascii() and customer_id.isdigit() and len(customer_id) <= 18):
            raise exceptions.AuthenticationFailed(
                "A channel acts on a customer's behalf: send X-Customer-Id."
            )
        customer = Customer.objects.select_related("user").filter(pk=int(customer_id)).first()
        if customer is None or not customer.user.is_active:
            raise exceptions.AuthenticationFailed("Unknown customer in X-Customer-Id.")
        return customer.user, channel

    def authenticate_header(self, request) -> str:
        return KEYWORD


class ChannelKeyScheme(OpenApiAuthenticationExtension):
    target_class = "oms.api.authentication.ChannelKeyAuthentication"
    name = "channelKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` plus `X-Customer-Id: <customer id>`: a sales "
            "channel's server acting on a customer's behalf.",
        }

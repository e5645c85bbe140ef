"""Proof that a delivery came from the source.

- Square: header ``x-square-hmacsha256-signature`` = base64(HMAC-SHA256(signature key, notification URL + raw
  body)), the key being the webhook subscription's ``signature_key`` (api-specs README, "Webhooks";
  ``square/api.json`` ``WebhookSubscription.signature_key``). Checked with the official SDK's helper
  (``square.utils.webhooks_helper.verify_signature``), which compares in constant time.
- BigCommerce: the hook is created with a custom header whose value is a shared secret; BigCommerce sends the
  hook's ``headers`` with every delivery (``bigcommerce/webhooks.v3.yml`` ``webhook_Base.headers``;
  ``webhook-events/https-webhook-overview.mdx``, "Security").
"""
from __future__ import annotations

import hmac

from square.utils.webhooks_helper import verify_signature

SQUARE_SIGNATURE_HEADER = "x-square-hmacsha256-signature"
BIGCOMMERCE_SECRET_HEADER = "X-Ecomsync-Webhook-Secret"


def square_signature_valid(body: bytes, signature: str | None, signature_key: str | None,
                           notification_url: str) -> bool:
    """True when ``signature`` signs ``notification_url + body`` with ``signature_key``; False for anything
    missing, unsigned or not UTF-8."""
    if not signature or not signature_key or not notification_url or not body:
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return verify_signature(request_body=text, signature_header=signature, signature_key=signature_key,
                            notification_url=notification_url)


def bigcommerce_secret_valid(presented: str | None, secret: str | None) -> bool:
    """True when the delivery carries the hook's secret header value (constant-time comparison)."""
    if not presented or not secret:
        return False
    return hmac.compare_digest(presented.encode(), secret.encode())

"""Stripe's own Python library against tollgate's webhook signatures, both
ways (the library is pinned in requirements.txt):

1. a body signed by `stripe.WebhookSignature.generate_signature_header`
   is accepted by tollgate's webhook (200), and the same header on a
   changed body is refused (400);
2. a header tollgate's signer made verifies with
   `stripe.WebhookSignature.verify_header`, and fails on a changed body.

Usage: stripe_check.py BASE_URL SECRET EVENT_JSON TOLLGATE_HEADER
"""

import sys
import urllib.error
import urllib.request

import stripe


def post(base, body, header):
    req = urllib.request.Request(
        base + "/v1/payments/stripe/webhook",
        data=body.encode(),
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    base, secret, event, tollgate_header = sys.argv[1:5]
    header = stripe.WebhookSignature.generate_signature_header(event, secret)
    status, text = post(base, event, header)
    assert status == 200, f"tollgate refused Stripe's own signature: {status} {text}"
    print("stripe-signed event accepted:", text)
    status, text = post(base, event.replace("}", " }", 1), header)
    assert status == 400 and "webhook_signature_invalid" in text, f"a changed body was accepted: {status} {text}"
    print("changed body refused")

    assert stripe.WebhookSignature.verify_header(event, tollgate_header, secret, 300)
    print("tollgate's signature verified by stripe", stripe.VERSION)
    try:
        stripe.WebhookSignature.verify_header(event + " ", tollgate_header, secret, 300)
    except stripe.SignatureVerificationError:
        print("stripe refuses tollgate's signature on a changed body")
    else:
        raise AssertionError("stripe accepted a changed body")


if __name__ == "__main__":
    main()

"""The official Stripe Python SDK against a running Calmony server: only the base URL and
the key change. Usage: python3 stripe_sdk_smoke.py <base_url> <secret_key>"""

import sys
import uuid

import stripe


def main() -> None:
    base_url, key = sys.argv[1], sys.argv[2]
    client = stripe.StripeClient(key, base_addresses={"api": base_url})

    customer = client.v1.customers.create({"email": "sdk@example.com", "name": "SDK Smoke"})
    assert customer.id.startswith("cus_"), customer
    assert customer.email == "sdk@example.com"

    method = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    assert method.id.startswith("pm_") and method.customer == customer.id, method
    assert method.card.brand == "visa"

    intent = client.v1.payment_intents.create(
        {
            "amount": 2000,
            "currency": "gbp",
            "customer": customer.id,
            "payment_method": method.id,
            "confirm": True,
            "metadata": {"order": "sdk-1"},
        },
        {"idempotency_key": str(uuid.uuid4())},
    )
    assert intent.status == "succeeded", intent
    assert intent.amount_received == 2000
    assert intent.metadata["order"] == "sdk-1"

    refund = client.v1.refunds.create({"payment_intent": intent.id, "amount": 500})
    assert refund.status == "succeeded" and refund.amount == 500, refund

    retrieved = client.v1.payment_intents.retrieve(intent.id, {"expand": ["latest_charge"]})
    assert retrieved.latest_charge.amount_refunded == 500, retrieved.latest_charge

    try:
        client.v1.payment_intents.create(
            {"amount": 999, "currency": "gbp", "payment_method": "pm_card_chargeDeclined", "confirm": True}
        )
        raise AssertionError("a declined card must raise CardError")
    except stripe.CardError as error:
        assert error.code == "card_declined", error

    try:
        client.v1.customers.retrieve("cus_missing")
        raise AssertionError("a missing customer must raise InvalidRequestError")
    except stripe.InvalidRequestError as error:
        assert error.http_status == 404

    listed = client.v1.customers.list({"limit": 1})
    assert len(listed.data) == 1

    print("stripe-python", stripe.VERSION, "drove Calmony: customer, attach, confirm, refund, errors: ok")


if __name__ == "__main__":
    main()

"""The official Stripe Python SDK against a running Calmony server: only the base URL and
the key change. Usage: python3 stripe_sdk_smoke.py <base_url> <secret_key>

Webhooks too: a tiny receiver (http.server in a thread) is registered as an endpoint, and
every delivery it gets must pass the SDK's own `stripe.Webhook.construct_event`."""

import http.server
import sys
import threading
import time
import uuid

import stripe


class Receiver(http.server.BaseHTTPRequestHandler):
    """Keeps every delivery's raw body and Stripe-Signature header; answers 200."""

    deliveries = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with Receiver.lock:
            Receiver.deliveries.append((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def start_receiver() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/webhooks"


def check_webhooks(client, secret: str, wanted: set) -> int:
    """Waits for the wanted event types, then verifies every delivery with the SDK."""
    deadline = time.time() + 30
    while True:
        with Receiver.lock:
            received = list(Receiver.deliveries)
        types = set()
        for body, signature in received:
            event = stripe.Webhook.construct_event(body.decode("utf-8"), signature, secret)
            assert event.object == "event" and event.id.startswith("evt_"), event
            types.add(event.type)
        if wanted <= types:
            break
        assert time.time() < deadline, f"webhooks missing: {wanted - types}"
        time.sleep(0.2)
    for body, signature in received:
        event = stripe.Webhook.construct_event(body.decode("utf-8"), signature, secret)
        shown = client.v1.events.retrieve(event.id)
        assert shown.type == event.type, (shown.type, event.type)
        assert shown.data.object.id == event.data.object.id
    body, signature = received[0]
    for wrong_body, wrong_secret in [(body + b" ", secret), (body, secret.removeprefix("whsec_"))]:
        try:
            stripe.Webhook.construct_event(wrong_body.decode("utf-8"), signature, wrong_secret)
            raise AssertionError("a tampered body or a wrong secret must not verify")
        except stripe.SignatureVerificationError:
            pass
    return len(received)


def main() -> None:
    base_url, key = sys.argv[1], sys.argv[2]
    client = stripe.StripeClient(key, base_addresses={"api": base_url})

    endpoint = client.v1.webhook_endpoints.create(
        {"url": start_receiver(), "enabled_events": ["*"], "description": "SDK smoke"}
    )
    assert endpoint.secret.startswith("whsec_") and endpoint.status == "enabled", endpoint
    secret = endpoint.secret
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)

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

    product = client.v1.products.create({"name": "SDK plan", "unit_label": "seat"})
    assert product.id.startswith("prod_") and product.active, product
    price = client.v1.prices.create(
        {"product": product.id, "currency": "gbp", "unit_amount": 1500,
         "recurring": {"interval": "month"}, "lookup_key": "sdk_monthly"}
    )
    assert price.type == "recurring" and price.recurring.interval == "month", price
    assert str(price.unit_amount_decimal) == "1500", price  # the SDK reads it as a Decimal
    found = client.v1.prices.list({"lookup_keys": ["sdk_monthly"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [price.id] and found.data[0].product.name == "SDK plan"
    rate = client.v1.tax_rates.create({"display_name": "VAT", "percentage": 20.0, "inclusive": False})
    assert rate.id.startswith("txr_") and rate.percentage == 20.0, rate
    try:
        client.v1.products.delete(product.id)
        raise AssertionError("a product with prices must not be deletable")
    except stripe.InvalidRequestError as error:
        assert error.http_status == 400

    verified = check_webhooks(
        client,
        secret,
        {"customer.created", "payment_method.attached", "payment_intent.succeeded",
         "refund.created", "charge.refunded", "product.created", "price.created",
         "tax_rate.created"},
    )
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    updated = client.v1.webhook_endpoints.update(endpoint.id, {"disabled": True})
    assert updated.status == "disabled", updated
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True

    print(
        "stripe-python", stripe.VERSION,
        "drove Calmony: customer, attach, confirm, refund, errors, catalog,",
        f"{verified} webhooks verified by construct_event: ok",
    )


if __name__ == "__main__":
    main()

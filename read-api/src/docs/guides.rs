//! The guides of `/docs`: how to authenticate, retry safely, page, verify webhooks, use the
//! official Stripe SDKs, and test with test cards and test clocks.

use maud::{html, Markup};

use super::registry::EXAMPLE_BASE_URL;

/// `(anchor, heading)` of every guide, in page order.
pub const GUIDES: &[(&str, &str)] = &[
    ("authentication", "Authentication"),
    ("errors", "Errors"),
    ("idempotency", "Idempotency"),
    ("pagination", "Pagination"),
    ("webhooks", "Webhook signature verification"),
    ("sdks", "Using the official Stripe SDKs"),
    ("test-cards", "Test cards"),
    ("test-clocks", "Test clocks"),
];

/// The test payment methods and what they do (README's table).
pub const TEST_CARDS: &[(&str, &str)] = &[
    ("pm_card_visa", "Approved."),
    ("pm_card_mastercard", "Approved."),
    ("pm_card_amex", "Approved."),
    (
        "pm_card_chargeDeclined",
        "Declined at tokenisation and on every charge (`generic_decline`).",
    ),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "Charges decline with `insufficient_funds`.",
    ),
    (
        "pm_card_chargeCustomerFail",
        "Attaches to a customer; every charge declines.",
    ),
    (
        "pm_card_authenticationRequired",
        "`requires_action`: a 3-D Secure challenge page at `next_action.redirect_to_url`.",
    ),
];

fn code(text: &str) -> Markup {
    html! { pre { code { (text) } } }
}

pub fn render(anchor: &str) -> Markup {
    match anchor {
        "authentication" => authentication(),
        "errors" => errors(),
        "idempotency" => idempotency(),
        "pagination" => pagination(),
        "webhooks" => webhooks(),
        "sdks" => sdks(),
        "test-cards" => test_cards(),
        "test-clocks" => test_clocks(),
        _ => html! {},
    }
}

fn authentication() -> Markup {
    html! {
        p {
            "Every " code { "/v1" } " request carries a secret key. The key decides the mode: "
            code { "sk_test_…" } " works on test data (charges go to the gateway simulator), "
            code { "sk_live_…" } " on live data. Send it as a bearer token (what the SDKs do) "
            "or as the user name of HTTP Basic auth with an empty password (what curl's "
            code { "-u" } " does):"
        }
        (code(&format!(
            "curl {EXAMPLE_BASE_URL}/v1/customers -H \"Authorization: Bearer sk_test_…\"\n\
             curl {EXAMPLE_BASE_URL}/v1/customers -u sk_test_…:"
        )))
        p {
            "A missing or unknown key answers 401. Each key has a rate limit; over it the "
            "answer is 429 with " code { "Retry-After" } ". Keys are created with "
            code { "calmony keys create --project proj_… --mode test" } " and shown once."
        }
        p {
            "Requests are form-encoded (" code { "application/x-www-form-urlencoded" } "), "
            "nested with brackets (" code { "metadata[order]=6735" } ", "
            code { "items[0][price]=price_…" } "; " code { "expand[]=customer" } " and "
            code { "expand[0]=customer" } " both work); an empty value unsets a field. "
            "Answers are JSON. Every answer has a " code { "Request-Id" } " header, and a "
            code { "Stripe-Version" } " header is accepted and echoed."
        }
    }
}

fn errors() -> Markup {
    html! {
        p { "Failures use Stripe's envelope and status codes:" }
        (code(r#"{"error": {"type": "invalid_request_error", "code": "resource_missing",
           "message": "No such customer: 'cus_nope'", "param": "id"}}"#))
        table {
            thead { tr { th { "Status" } th { "type" } th { "Meaning" } } }
            tbody {
                tr { td { "400" } td { code { "invalid_request_error" } } td { "A parameter is missing, invalid or unknown (" code { "param" } " names it)." } }
                tr { td { "400" } td { code { "idempotency_error" } } td { "An idempotency key reused with other parameters." } }
                tr { td { "401" } td { code { "invalid_request_error" } } td { "No valid API key." } }
                tr { td { "402" } td { code { "card_error" } } td { "The card was declined: " code { "code" } ", " code { "decline_code" } ", and the payment intent." } }
                tr { td { "404" } td { code { "invalid_request_error" } } td { code { "resource_missing" } ": no such object in this project and mode." } }
                tr { td { "409" } td { code { "invalid_request_error" } } td { code { "idempotency_key_in_use" } ": the same key is still in flight; retry." } }
                tr { td { "429" } td { code { "invalid_request_error" } } td { "Rate limited; see " code { "Retry-After" } "." } }
                tr { td { "500" } td { code { "api_error" } } td { "Our fault." } }
            }
        }
    }
}

fn idempotency() -> Markup {
    html! {
        p {
            "Any POST may carry an " code { "Idempotency-Key" } " header (the SDKs add one to "
            "every POST). The first answer under a key, error or not, is stored for 24 hours; "
            "a retry with the same key and parameters gets that answer again, with "
            code { "Idempotent-Replayed: true" } ", and nothing happens twice — a payment is "
            "charged once however often it is retried."
        }
        ul {
            li { "While the first request with a key is still running, another one answers " b { "409" } " (" code { "idempotency_key_in_use" } "); the SDKs retry it." }
            li { "The same key with different parameters answers " b { "400" } " with " code { "type=idempotency_error" } "." }
            li { "Keys are scoped to the API key's project and mode, at most 255 characters. After 24 hours a key may be used afresh." }
        }
        (code(&format!(
            "curl {EXAMPLE_BASE_URL}/v1/payment_intents -u sk_test_…: \\\n  \
             -H \"Idempotency-Key: $(uuidgen)\" \\\n  \
             -d amount=2000 -d currency=gbp -d payment_method=pm_card_visa -d confirm=true"
        )))
    }
}

fn pagination() -> Markup {
    html! {
        p {
            "Lists answer " code { r#"{"object": "list", "url": "/v1/customers", "has_more": true, "data": [...]}"# }
            ", newest first. " code { "limit" } " is 1–100 (default 10). For the next page "
            "pass the last object's id as " code { "starting_after" } "; for the previous page "
            "the first object's id as " code { "ending_before" } " (not both)."
        }
        (code(&format!(
            "curl -G {EXAMPLE_BASE_URL}/v1/customers -u sk_test_…: -d limit=3\n\
             curl -G {EXAMPLE_BASE_URL}/v1/customers -u sk_test_…: -d limit=3 -d starting_after=cus_…"
        )))
        p {
            "The SDKs' auto-paging (" code { "auto_paging_iter()" } " in Python, "
            code { "for await" } " in Node) follows " code { "url" } " the same way."
        }
    }
}

fn webhooks() -> Markup {
    html! {
        p {
            "Create an endpoint (" a href="#PostWebhookEndpoints" { code { "POST /v1/webhook_endpoints" } }
            "); its answer, and only that one, carries the signing secret "
            code { "whsec_…" } ". Each delivery is a JSON POST with a "
            code { "Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256>" } " header: the HMAC "
            "of " code { "<t>.<raw body>" } " keyed by the whole " code { "whsec_…" } " string, "
            "exactly as Stripe signs, so the SDKs' own verification works unchanged. Verify the "
            "raw body, before any JSON parsing, and reject old timestamps (the SDKs' default "
            "tolerance is 300 s)."
        }
        h3 { "Python" }
        (code(r#"import stripe
from flask import Flask, request

app = Flask(__name__)
endpoint_secret = "whsec_…"  # from the create answer

@app.post("/webhooks")
def webhooks():
    try:
        event = stripe.Webhook.construct_event(
            request.get_data(), request.headers["Stripe-Signature"], endpoint_secret
        )
    except (ValueError, stripe.SignatureVerificationError):
        return "", 400
    if event.type == "payment_intent.succeeded":
        print("paid:", event.data.object.id)
    return "", 200"#))
        h3 { "Node" }
        (code(r#"const express = require('express');
const Stripe = require('stripe');
const stripe = new Stripe('sk_test_…');
const endpointSecret = 'whsec_…';

const app = express();
app.post('/webhooks', express.raw({type: 'application/json'}), (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], endpointSecret);
  } catch (err) {
    return res.status(400).send(`Webhook Error: ${err.message}`);
  }
  if (event.type === 'payment_intent.succeeded') console.log('paid:', event.data.object.id);
  res.sendStatus(200);
});
app.listen(4242);"#))
        p {
            "Any 2xx counts as delivered; anything else is retried with exponential backoff for "
            "three days. Deliveries can repeat and arrive out of order: use the event's "
            code { "id" } " to ignore duplicates. "
            a href="#GetWebhookEndpointsIdDeliveries" { "Deliveries" } " shows every attempt; "
            a href="#PostEventsIdRedeliver" { "redeliver" } " sends an event again."
        }
    }
}

fn sdks() -> Markup {
    html! {
        p {
            "The official Stripe SDKs (Python " code { "stripe" } " 16.x, Node " code { "stripe" }
            " 23.x) work against Calmony Pay by changing only the base URL and the key."
        }
        h3 { "Python" }
        (code(&format!(
            r#"import stripe

client = stripe.StripeClient("sk_test_…", base_addresses={{"api": "{EXAMPLE_BASE_URL}"}})
customer = client.v1.customers.create({{"email": "ada@example.com"}})
pm = client.v1.payment_methods.attach("pm_card_visa", {{"customer": customer.id}})
intent = client.v1.payment_intents.create({{
    "amount": 2000, "currency": "gbp", "customer": customer.id,
    "payment_method": pm.id, "confirm": True,
}})
print(intent.status)  # succeeded"#
        )))
        h3 { "Node" }
        (code(r#"const Stripe = require('stripe');
const stripe = new Stripe('sk_test_…', {host: '127.0.0.1', port: 8080, protocol: 'http'});

const customer = await stripe.customers.create({email: 'ada@example.com'});
const pm = await stripe.paymentMethods.attach('pm_card_visa', {customer: customer.id});
const intent = await stripe.paymentIntents.create({
  amount: 2000, currency: 'gbp', customer: customer.id, payment_method: pm.id, confirm: true,
});
console.log(intent.status); // succeeded"#))
        p {
            "The machine-readable description of every endpoint is "
            a href="/openapi.json" { code { "/openapi.json" } } " (OpenAPI 3.1)."
        }
    }
}

fn test_cards() -> Markup {
    html! {
        p {
            "In test mode these payment methods can be used directly (as "
            code { "payment_method" } ") or attached to a customer, which creates a new "
            code { "pm_…" } ". Each maps onto a test card of the gateway simulator, so the "
            "outcome follows the card, not the amount."
        }
        table {
            thead { tr { th { "Payment method" } th { "Outcome" } } }
            tbody {
                @for (id, outcome) in TEST_CARDS {
                    tr { td { code { (id) } } td { (outcome) } }
                }
            }
        }
        p {
            "Card numbers work too (" code { "card[number]=4242424242424242" } " with any "
            "future expiry and any CVC), as do the tokens " code { "tok_visa" } " and friends in "
            code { "card[token]" } "."
        }
    }
}

fn test_clocks() -> Markup {
    html! {
        p {
            "A test clock is a time of your own for test-mode customers. Create one, create "
            "customers on it, subscribe them, then advance the clock: renewals, failed-payment "
            "retries, dunning and expiries due by the new time happen, with their events and "
            "webhooks. " code { "advance" } " answers " code { "status=advancing" } "; the "
            "clock is " code { "ready" } " once that work is done."
        }
        (code(&format!(
            "curl {EXAMPLE_BASE_URL}/v1/test_helpers/test_clocks -u sk_test_…: -d frozen_time=1767225600\n\
             curl {EXAMPLE_BASE_URL}/v1/customers -u sk_test_…: -d test_clock=clock_… -d email=ada@example.com\n\
             # … attach pm_card_visa, set invoice_settings[default_payment_method], subscribe …\n\
             curl {EXAMPLE_BASE_URL}/v1/test_helpers/test_clocks/clock_…/advance -u sk_test_…: -d frozen_time=1769904000\n\
             curl {EXAMPLE_BASE_URL}/v1/test_helpers/test_clocks/clock_… -u sk_test_…:   # until status=ready"
        )))
        p {
            "Use " code { "pm_card_chargeCustomerFail" } " as the default payment method to watch "
            "dunning: the renewal invoice stays open and is retried on the project's schedule "
            "before the subscription becomes " code { "past_due" } "."
        }
    }
}

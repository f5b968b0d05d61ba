//! Every `/v1` endpoint, once: method, path, what it does, its parameters, what it returns,
//! its errors and a curl example. The OpenAPI document and the `/docs` pages are both built
//! from this table, and tests hold it to the router (`v1::routes`) and to the parameters
//! the handlers actually take, so the three cannot drift apart.
//!
//! Parameters common to whole classes of endpoints are not repeated here but derived:
//! `{id}` path segments, `limit`/`starting_after`/`ending_before` on lists, `expand[]` where
//! the handler takes it; and so are the errors every authenticated request can meet.

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// The type of a parameter's value, as the form (or query string) carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Boolean,
    /// Unix seconds.
    Timestamp,
    Enum(&'static [&'static str]),
    /// `name[]=a&name[]=b` (or `name[0]=a`).
    StringList,
    /// `metadata[key]=value`; an empty value unsets a key, an empty `metadata` all of them.
    Metadata,
}

/// One request parameter. Nested names use Stripe's brackets: `card[number]`,
/// `items[][price]` (an array of objects).
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

const fn optional(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        description,
    }
}

const fn required(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        description,
    }
}

/// What a successful call answers (always HTTP 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// One object of this `object` type.
    Object(&'static str),
    /// A list object whose `data` holds objects of this type; takes the paging parameters.
    List(&'static str),
    /// `{"id", "object", "deleted": true}`.
    Deleted(&'static str),
}

impl Returns {
    pub fn object(self) -> &'static str {
        match self {
            Returns::Object(object) | Returns::List(object) | Returns::Deleted(object) => object,
        }
    }
}

/// An error particular to an endpoint (the common ones are added by [`Endpoint::errors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCase {
    pub status: u16,
    /// `error.type`.
    pub error_type: &'static str,
    /// `error.code`, when there is one.
    pub code: Option<&'static str>,
    pub when: &'static str,
}

const fn error(
    status: u16,
    error_type: &'static str,
    code: Option<&'static str>,
    when: &'static str,
) -> ErrorCase {
    ErrorCase {
        status,
        error_type,
        code,
        when,
    }
}

const CARD_DECLINED: ErrorCase = error(
    402,
    "card_error",
    Some("card_declined"),
    "The charge was declined (`decline_code` says why); the error carries the payment intent.",
);

#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// The resource heading it is listed under.
    pub resource: &'static str,
    pub method: Method,
    pub path: &'static str,
    /// `module::function` in `read-api/src/v1/` (tests read its parameters from there).
    pub handler: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// Parameters besides the derived ones (path ids, paging, `expand[]`).
    pub params: &'static [Param],
    /// Whether it takes `expand[]`.
    pub expand: bool,
    pub returns: Returns,
    pub errors: &'static [ErrorCase],
    /// Form (or query) pairs of the curl example; `{id}` in the path becomes `example_id`.
    pub example: &'static [(&'static str, &'static str)],
    pub example_id: &'static str,
}

/// Resources in the order the docs list them, with a sentence each.
pub const RESOURCES: &[(&str, &str)] = &[
    ("Customers", "The people and businesses you charge."),
    (
        "Payment methods",
        "Cards, tokenised at the gateway; attach one to a customer to charge it again.",
    ),
    (
        "Payment intents",
        "One payment's life: create, confirm (3-D Secure when the card asks), capture, cancel.",
    ),
    ("Refunds", "Money returned on a charge, in full or in part."),
    (
        "Charges",
        "The attempts to move money made by payment intents (read-only).",
    ),
    (
        "Events",
        "What happened, newest first; the same objects webhooks deliver.",
    ),
    ("Webhook endpoints", "Where events are sent, signed."),
    ("Products", "What you sell."),
    ("Prices", "How much and how often a product costs."),
    ("Tax rates", "Percentages applied to invoice lines."),
    (
        "Invoices",
        "Bills for a customer: drafted, finalized, paid, voided.",
    ),
    (
        "Invoice items",
        "Pending charges that go onto a customer's next invoice.",
    ),
    ("Subscriptions", "Recurring billing on a customer's card."),
    (
        "Test clocks",
        "Move time forward in test mode to see renewals, retries and expiries happen.",
    ),
    (
        "Checkout Sessions",
        "A hosted payment page for a one-off payment, a subscription or saving a card.",
    ),
    (
        "Customer portal",
        "A hosted page where a customer updates their card, sees invoices and manages \
         subscriptions.",
    ),
];

use Kind::{Boolean, Enum, Integer, Metadata, String as Text, StringList, Timestamp};
use Method::{Delete, Get, Post};

const METADATA: Param = optional(
    "metadata",
    Metadata,
    "Key-value pairs (`metadata[key]=value`); an empty value unsets a key.",
);
const DESCRIPTION: Param = optional("description", Text, "Free text shown to you.");

/// The table itself, grouped by resource in [`RESOURCES`] order.
pub const ENDPOINTS: &[Endpoint] = &[
    // Customers
    Endpoint {
        resource: "Customers",
        method: Post,
        path: "/v1/customers",
        handler: "customers::create",
        summary: "Create a customer",
        description: "Creates a customer. In test mode it may be put on a test clock.",
        params: &[
            optional("email", Text, "Email address."),
            optional("name", Text, "Full name or business name."),
            DESCRIPTION,
            optional("phone", Text, "Phone number."),
            optional(
                "invoice_settings[default_payment_method]",
                Text,
                "The payment method (`pm_…`) invoices and subscriptions charge by default.",
            ),
            METADATA,
            optional(
                "test_clock",
                Text,
                "A test clock (`clock_…`, test mode only) whose time this customer's billing follows.",
            ),
        ],
        expand: true,
        returns: Returns::Object("customer"),
        errors: &[],
        example: &[("email", "ada@example.com"), ("name", "Ada Lovelace")],
        example_id: "",
    },
    Endpoint {
        resource: "Customers",
        method: Get,
        path: "/v1/customers",
        handler: "customers::list",
        summary: "List customers",
        description: "Customers, newest first.",
        params: &[optional(
            "email",
            Text,
            "Only customers with this email (case-sensitive).",
        )],
        expand: true,
        returns: Returns::List("customer"),
        errors: &[],
        example: &[("limit", "3")],
        example_id: "",
    },
    Endpoint {
        resource: "Customers",
        method: Get,
        path: "/v1/customers/{id}",
        handler: "customers::retrieve",
        summary: "Retrieve a customer",
        description: "A deleted customer is answered as `{\"id\", \"object\", \"deleted\": true}`.",
        params: &[],
        expand: true,
        returns: Returns::Object("customer"),
        errors: &[],
        example: &[],
        example_id: "cus_NffrFeUfNV2Hib",
    },
    Endpoint {
        resource: "Customers",
        method: Post,
        path: "/v1/customers/{id}",
        handler: "customers::update",
        summary: "Update a customer",
        description: "Changes the parameters given; an empty value unsets a field.",
        params: &[
            optional("email", Text, "Email address."),
            optional("name", Text, "Full name or business name."),
            DESCRIPTION,
            optional("phone", Text, "Phone number."),
            optional(
                "invoice_settings[default_payment_method]",
                Text,
                "The payment method (`pm_…`) charged by default.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("customer"),
        errors: &[],
        example: &[("name", "Ada King")],
        example_id: "cus_NffrFeUfNV2Hib",
    },
    Endpoint {
        resource: "Customers",
        method: Delete,
        path: "/v1/customers/{id}",
        handler: "customers::delete",
        summary: "Delete a customer",
        description: "Deletes the customer; retrieving it afterwards answers `deleted: true`.",
        params: &[],
        expand: true,
        returns: Returns::Deleted("customer"),
        errors: &[],
        example: &[],
        example_id: "cus_NffrFeUfNV2Hib",
    },
    Endpoint {
        resource: "Customers",
        method: Get,
        path: "/v1/customers/{id}/payment_methods",
        handler: "customers::list_payment_methods",
        summary: "List a customer's payment methods",
        description: "The payment methods attached to the customer, newest first.",
        params: &[optional(
            "type",
            Text,
            "Accepted for compatibility; every payment method is a card.",
        )],
        expand: false,
        returns: Returns::List("payment_method"),
        errors: &[],
        example: &[],
        example_id: "cus_NffrFeUfNV2Hib",
    },
    // Payment methods
    Endpoint {
        resource: "Payment methods",
        method: Post,
        path: "/v1/payment_methods",
        handler: "payment_methods::create",
        summary: "Create a payment method",
        description: "Tokenises a card at the gateway; the card number is never stored. Test \
                      cards: see the test cards guide (or use `pm_card_visa` etc. directly).",
        params: &[
            required("type", Enum(&["card"]), "Always `card`."),
            optional("card[number]", Text, "The card number."),
            optional("card[exp_month]", Integer, "Expiry month, 1–12."),
            optional("card[exp_year]", Integer, "Expiry year, four digits."),
            optional("card[cvc]", Text, "The card's security code."),
            optional(
                "card[token]",
                Text,
                "A test token such as `tok_visa`, instead of the number.",
            ),
            optional("billing_details[name]", Text, "Cardholder name."),
            optional("billing_details[email]", Text, "Cardholder email."),
            optional("billing_details[phone]", Text, "Cardholder phone."),
            optional(
                "billing_details[address][postal_code]",
                Text,
                "Postal code (checked by the gateway). `city`, `country`, `line1`, `line2`, \
                 `state` are accepted and ignored.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("payment_method"),
        errors: &[CARD_DECLINED],
        example: &[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
            ("card[cvc]", "123"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Payment methods",
        method: Get,
        path: "/v1/payment_methods",
        handler: "payment_methods::list",
        summary: "List payment methods",
        description: "A customer's payment methods, newest first.",
        params: &[
            optional("customer", Text, "Whose payment methods (`cus_…`)."),
            optional(
                "type",
                Text,
                "Accepted for compatibility; every payment method is a card.",
            ),
        ],
        expand: false,
        returns: Returns::List("payment_method"),
        errors: &[],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "",
    },
    Endpoint {
        resource: "Payment methods",
        method: Get,
        path: "/v1/payment_methods/{id}",
        handler: "payment_methods::retrieve",
        summary: "Retrieve a payment method",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("payment_method"),
        errors: &[],
        example: &[],
        example_id: "pm_1MqLiJLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment methods",
        method: Post,
        path: "/v1/payment_methods/{id}",
        handler: "payment_methods::update",
        summary: "Update a payment method",
        description: "Changes billing details and metadata.",
        params: &[
            optional("billing_details[name]", Text, "Cardholder name."),
            optional("billing_details[email]", Text, "Cardholder email."),
            optional("billing_details[phone]", Text, "Cardholder phone."),
            optional(
                "billing_details[address][postal_code]",
                Text,
                "Postal code.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("payment_method"),
        errors: &[],
        example: &[("metadata[order]", "6735")],
        example_id: "pm_1MqLiJLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment methods",
        method: Post,
        path: "/v1/payment_methods/{id}/attach",
        handler: "payment_methods::attach",
        summary: "Attach a payment method to a customer",
        description: "Attaching a test payment method (`pm_card_visa`, …) creates a new `pm_…` \
                      for the customer, as Stripe does.",
        params: &[required("customer", Text, "The customer (`cus_…`).")],
        expand: true,
        returns: Returns::Object("payment_method"),
        errors: &[CARD_DECLINED],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "pm_card_visa",
    },
    Endpoint {
        resource: "Payment methods",
        method: Post,
        path: "/v1/payment_methods/{id}/detach",
        handler: "payment_methods::detach",
        summary: "Detach a payment method",
        description: "It can no longer be charged for the customer.",
        params: &[],
        expand: true,
        returns: Returns::Object("payment_method"),
        errors: &[],
        example: &[],
        example_id: "pm_1MqLiJLkdIwHu7ix",
    },
    // Payment intents
    Endpoint {
        resource: "Payment intents",
        method: Post,
        path: "/v1/payment_intents",
        handler: "payment_intents::create",
        summary: "Create a payment intent",
        description: "With `confirm=true` it is confirmed at once: the answer is `succeeded`, \
                      `requires_capture`, `requires_action` (3-D Secure: follow \
                      `next_action.redirect_to_url`) or a 402 card error.",
        params: &[
            required(
                "amount",
                Integer,
                "In the currency's minor unit (1000 = 10.00 GBP).",
            ),
            required("currency", Text, "Lowercase ISO code, e.g. `gbp`."),
            optional("customer", Text, "The customer (`cus_…`)."),
            optional("payment_method", Text, "The payment method (`pm_…`) to charge."),
            optional("confirm", Boolean, "Confirm (charge) immediately."),
            optional(
                "off_session",
                Boolean,
                "The customer is not present (with `confirm=true`).",
            ),
            optional(
                "capture_method",
                Enum(&["automatic", "automatic_async", "manual"]),
                "`manual` authorises now and captures later.",
            ),
            DESCRIPTION,
            optional("receipt_email", Text, "Where the receipt goes."),
            METADATA,
            optional(
                "payment_method_types",
                StringList,
                "Only `card` is supported.",
            ),
            optional(
                "automatic_payment_methods[enabled]",
                Boolean,
                "Accepted for compatibility.",
            ),
            optional(
                "automatic_payment_methods[allow_redirects]",
                Text,
                "Accepted for compatibility.",
            ),
            optional(
                "return_url",
                Text,
                "Accepted for compatibility (3-D Secure returns to our page).",
            ),
            optional(
                "confirmation_method",
                Text,
                "Accepted for compatibility.",
            ),
            optional(
                "setup_future_usage",
                Text,
                "Accepted for compatibility; cards stay reusable.",
            ),
        ],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[CARD_DECLINED],
        example: &[
            ("amount", "2000"),
            ("currency", "gbp"),
            ("customer", "cus_NffrFeUfNV2Hib"),
            ("payment_method", "pm_1MqLiJLkdIwHu7ix"),
            ("confirm", "true"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Payment intents",
        method: Get,
        path: "/v1/payment_intents",
        handler: "payment_intents::list",
        summary: "List payment intents",
        description: "Payment intents, newest first.",
        params: &[optional("customer", Text, "Only this customer's.")],
        expand: true,
        returns: Returns::List("payment_intent"),
        errors: &[],
        example: &[("limit", "3")],
        example_id: "",
    },
    Endpoint {
        resource: "Payment intents",
        method: Get,
        path: "/v1/payment_intents/{id}",
        handler: "payment_intents::retrieve",
        summary: "Retrieve a payment intent",
        description: "",
        params: &[optional(
            "client_secret",
            Text,
            "Accepted for compatibility; the API key decides access.",
        )],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[],
        example: &[],
        example_id: "pi_3MtwBwLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment intents",
        method: Post,
        path: "/v1/payment_intents/{id}",
        handler: "payment_intents::update",
        summary: "Update a payment intent",
        description: "Before it is confirmed.",
        params: &[
            optional("amount", Integer, "In the currency's minor unit."),
            optional("currency", Text, "Lowercase ISO code."),
            optional("customer", Text, "The customer (`cus_…`)."),
            optional("payment_method", Text, "The payment method (`pm_…`)."),
            DESCRIPTION,
            optional("receipt_email", Text, "Where the receipt goes."),
            METADATA,
            optional(
                "capture_method",
                Enum(&["automatic", "automatic_async", "manual"]),
                "When funds are captured.",
            ),
            optional(
                "payment_method_types",
                StringList,
                "Only `card` is supported.",
            ),
            optional(
                "setup_future_usage",
                Text,
                "Accepted for compatibility.",
            ),
        ],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[],
        example: &[("amount", "2500")],
        example_id: "pi_3MtwBwLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment intents",
        method: Post,
        path: "/v1/payment_intents/{id}/confirm",
        handler: "payment_intents::confirm",
        summary: "Confirm a payment intent",
        description: "Charges (or authorises) the payment method; exactly once per intent, \
                      whatever the retries.",
        params: &[
            optional("payment_method", Text, "The payment method (`pm_…`) to charge."),
            optional("off_session", Boolean, "The customer is not present."),
            optional(
                "setup_future_usage",
                Text,
                "Accepted for compatibility.",
            ),
            optional(
                "return_url",
                Text,
                "Accepted for compatibility (3-D Secure returns to our page).",
            ),
        ],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[CARD_DECLINED],
        example: &[("payment_method", "pm_card_visa")],
        example_id: "pi_3MtwBwLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment intents",
        method: Post,
        path: "/v1/payment_intents/{id}/capture",
        handler: "payment_intents::capture",
        summary: "Capture a payment intent",
        description: "Captures an authorised (`requires_capture`) payment, in full or in part.",
        params: &[optional(
            "amount_to_capture",
            Integer,
            "At most `amount_capturable`; the rest is released. Default: all of it.",
        )],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[],
        example: &[("amount_to_capture", "1500")],
        example_id: "pi_3MtwBwLkdIwHu7ix",
    },
    Endpoint {
        resource: "Payment intents",
        method: Post,
        path: "/v1/payment_intents/{id}/cancel",
        handler: "payment_intents::cancel",
        summary: "Cancel a payment intent",
        description: "Allowed before it succeeds; an authorisation is released.",
        params: &[optional(
            "cancellation_reason",
            Enum(&[
                "duplicate",
                "fraudulent",
                "requested_by_customer",
                "abandoned",
            ]),
            "Why.",
        )],
        expand: true,
        returns: Returns::Object("payment_intent"),
        errors: &[],
        example: &[("cancellation_reason", "requested_by_customer")],
        example_id: "pi_3MtwBwLkdIwHu7ix",
    },
    // Refunds
    Endpoint {
        resource: "Refunds",
        method: Post,
        path: "/v1/refunds",
        handler: "refunds::create",
        summary: "Create a refund",
        description: "Refunds a succeeded payment, in full or in part (several partial refunds \
                      may add up to the amount captured).",
        params: &[
            optional(
                "payment_intent",
                Text,
                "The payment intent (`pi_…`); this or `charge`.",
            ),
            optional("charge", Text, "The charge (`ch_…`); this or `payment_intent`."),
            optional(
                "amount",
                Integer,
                "In the minor unit; default: all that is left.",
            ),
            optional(
                "reason",
                Enum(&["duplicate", "fraudulent", "requested_by_customer"]),
                "Why.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("refund"),
        errors: &[],
        example: &[("payment_intent", "pi_3MtwBwLkdIwHu7ix"), ("amount", "500")],
        example_id: "",
    },
    Endpoint {
        resource: "Refunds",
        method: Get,
        path: "/v1/refunds",
        handler: "refunds::list",
        summary: "List refunds",
        description: "Refunds, newest first.",
        params: &[
            optional("payment_intent", Text, "Only this payment intent's."),
            optional("charge", Text, "Only this charge's."),
        ],
        expand: false,
        returns: Returns::List("refund"),
        errors: &[],
        example: &[("payment_intent", "pi_3MtwBwLkdIwHu7ix")],
        example_id: "",
    },
    Endpoint {
        resource: "Refunds",
        method: Get,
        path: "/v1/refunds/{id}",
        handler: "refunds::retrieve",
        summary: "Retrieve a refund",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("refund"),
        errors: &[],
        example: &[],
        example_id: "re_1Nispe2eZvKYlo2C",
    },
    // Charges
    Endpoint {
        resource: "Charges",
        method: Get,
        path: "/v1/charges",
        handler: "refunds::list_charges",
        summary: "List charges",
        description: "Charges, newest first.",
        params: &[
            optional("payment_intent", Text, "Only this payment intent's."),
            optional("charge", Text, "Only the charges of this charge's payment intent."),
            optional("customer", Text, "Only this customer's."),
        ],
        expand: false,
        returns: Returns::List("charge"),
        errors: &[],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "",
    },
    Endpoint {
        resource: "Charges",
        method: Get,
        path: "/v1/charges/{id}",
        handler: "refunds::retrieve_charge",
        summary: "Retrieve a charge",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("charge"),
        errors: &[],
        example: &[],
        example_id: "ch_3MmlLrLkdIwHu7ix",
    },
    // Events
    Endpoint {
        resource: "Events",
        method: Get,
        path: "/v1/events",
        handler: "events::list",
        summary: "List events",
        description: "Events of the key's project and mode, newest first.",
        params: &[
            optional("type", Text, "One event type, e.g. `payment_intent.succeeded`."),
            optional("types", StringList, "Several event types (not with `type`)."),
            optional(
                "delivery_success",
                Boolean,
                "Only events whose webhook deliveries all succeeded (`true`) or not (`false`).",
            ),
        ],
        expand: false,
        returns: Returns::List("event"),
        errors: &[],
        example: &[("type", "payment_intent.succeeded")],
        example_id: "",
    },
    Endpoint {
        resource: "Events",
        method: Get,
        path: "/v1/events/{id}",
        handler: "events::retrieve",
        summary: "Retrieve an event",
        description: "",
        params: &[],
        expand: false,
        returns: Returns::Object("event"),
        errors: &[],
        example: &[],
        example_id: "evt_1NG8Du2eZvKYlo2C",
    },
    Endpoint {
        resource: "Events",
        method: Post,
        path: "/v1/events/{id}/redeliver",
        handler: "events::redeliver",
        summary: "Send an event again",
        description: "Queues a fresh delivery of the event to one of your endpoints.",
        params: &[required(
            "webhook_endpoint",
            Text,
            "The endpoint (`we_…`) to deliver to.",
        )],
        expand: true,
        returns: Returns::Object("event"),
        errors: &[],
        example: &[("webhook_endpoint", "we_1Mr5jULkdIwHu7ix")],
        example_id: "evt_1NG8Du2eZvKYlo2C",
    },
    // Webhook endpoints
    Endpoint {
        resource: "Webhook endpoints",
        method: Post,
        path: "/v1/webhook_endpoints",
        handler: "webhook_endpoints::create",
        summary: "Create a webhook endpoint",
        description: "The answer carries the signing `secret` (`whsec_…`), and only this answer. \
                      Loopback and private addresses are allowed in test mode only.",
        params: &[
            required("url", Text, "Where events are POSTed (http or https)."),
            required(
                "enabled_events",
                StringList,
                "Event types, or `*` for all of them.",
            ),
            optional(
                "api_version",
                Text,
                "Only `2026-10-28.endive`, the version events are rendered in.",
            ),
            DESCRIPTION,
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("webhook_endpoint"),
        errors: &[],
        example: &[
            ("url", "https://example.com/webhooks"),
            ("enabled_events[]", "*"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Webhook endpoints",
        method: Get,
        path: "/v1/webhook_endpoints",
        handler: "webhook_endpoints::list",
        summary: "List webhook endpoints",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::List("webhook_endpoint"),
        errors: &[],
        example: &[],
        example_id: "",
    },
    Endpoint {
        resource: "Webhook endpoints",
        method: Get,
        path: "/v1/webhook_endpoints/{id}",
        handler: "webhook_endpoints::retrieve",
        summary: "Retrieve a webhook endpoint",
        description: "Without its secret.",
        params: &[],
        expand: true,
        returns: Returns::Object("webhook_endpoint"),
        errors: &[],
        example: &[],
        example_id: "we_1Mr5jULkdIwHu7ix",
    },
    Endpoint {
        resource: "Webhook endpoints",
        method: Post,
        path: "/v1/webhook_endpoints/{id}",
        handler: "webhook_endpoints::update",
        summary: "Update a webhook endpoint",
        description: "Disabling an endpoint cancels its pending deliveries.",
        params: &[
            optional("url", Text, "Where events are POSTed."),
            optional("enabled_events", StringList, "Event types, or `*`."),
            optional("disabled", Boolean, "Stop (`true`) or resume (`false`) delivery."),
            DESCRIPTION,
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("webhook_endpoint"),
        errors: &[],
        example: &[("disabled", "true")],
        example_id: "we_1Mr5jULkdIwHu7ix",
    },
    Endpoint {
        resource: "Webhook endpoints",
        method: Delete,
        path: "/v1/webhook_endpoints/{id}",
        handler: "webhook_endpoints::delete",
        summary: "Delete a webhook endpoint",
        description: "Its pending deliveries are cancelled.",
        params: &[],
        expand: true,
        returns: Returns::Deleted("webhook_endpoint"),
        errors: &[],
        example: &[],
        example_id: "we_1Mr5jULkdIwHu7ix",
    },
    Endpoint {
        resource: "Webhook endpoints",
        method: Get,
        path: "/v1/webhook_endpoints/{id}/deliveries",
        handler: "webhook_endpoints::deliveries",
        summary: "List an endpoint's deliveries",
        description: "Every attempt to deliver events to the endpoint, newest first (a Calmony \
                      extension).",
        params: &[optional("event", Text, "Only this event's (`evt_…`).")],
        expand: false,
        returns: Returns::List("webhook_delivery"),
        errors: &[],
        example: &[],
        example_id: "we_1Mr5jULkdIwHu7ix",
    },
    // Products
    Endpoint {
        resource: "Products",
        method: Post,
        path: "/v1/products",
        handler: "products::create",
        summary: "Create a product",
        description: "",
        params: &[
            required("name", Text, "Shown to customers."),
            DESCRIPTION,
            optional("active", Boolean, "Whether it can be sold (default `true`)."),
            optional("unit_label", Text, "Shown on invoices, e.g. `seat`."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("product"),
        errors: &[],
        example: &[("name", "Gold plan")],
        example_id: "",
    },
    Endpoint {
        resource: "Products",
        method: Get,
        path: "/v1/products",
        handler: "products::list",
        summary: "List products",
        description: "",
        params: &[
            optional("active", Boolean, "Only active (or archived) products."),
            optional("ids", StringList, "Only these products."),
        ],
        expand: true,
        returns: Returns::List("product"),
        errors: &[],
        example: &[("active", "true")],
        example_id: "",
    },
    Endpoint {
        resource: "Products",
        method: Get,
        path: "/v1/products/{id}",
        handler: "products::retrieve",
        summary: "Retrieve a product",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("product"),
        errors: &[],
        example: &[],
        example_id: "prod_NWjs8kKbJWmuuc",
    },
    Endpoint {
        resource: "Products",
        method: Post,
        path: "/v1/products/{id}",
        handler: "products::update",
        summary: "Update a product",
        description: "",
        params: &[
            optional("name", Text, "Shown to customers."),
            DESCRIPTION,
            optional("active", Boolean, "Archive with `false`."),
            optional("default_price", Text, "One of its prices (`price_…`)."),
            optional("unit_label", Text, "Shown on invoices."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("product"),
        errors: &[],
        example: &[("active", "false")],
        example_id: "prod_NWjs8kKbJWmuuc",
    },
    Endpoint {
        resource: "Products",
        method: Delete,
        path: "/v1/products/{id}",
        handler: "products::delete",
        summary: "Delete a product",
        description: "Only while it has no prices; archive it otherwise.",
        params: &[],
        expand: true,
        returns: Returns::Deleted("product"),
        errors: &[],
        example: &[],
        example_id: "prod_NWjs8kKbJWmuuc",
    },
    // Prices
    Endpoint {
        resource: "Prices",
        method: Post,
        path: "/v1/prices",
        handler: "prices::create",
        summary: "Create a price",
        description: "Per-unit, one-time or recurring (every 1 year at most). Amount, currency \
                      and interval are fixed once created.",
        params: &[
            required("currency", Text, "Lowercase ISO code."),
            optional("unit_amount", Integer, "In the minor unit."),
            optional("product", Text, "The product (`prod_…`); this or `product_data`."),
            optional("product_data[name]", Text, "A new product's name."),
            optional("product_data[active]", Boolean, "… whether it is active."),
            optional("product_data[unit_label]", Text, "… its unit label."),
            optional("product_data[metadata]", Metadata, "… its metadata."),
            optional(
                "recurring[interval]",
                Enum(&["day", "week", "month", "year"]),
                "Makes the price recurring.",
            ),
            optional(
                "recurring[interval_count]",
                Integer,
                "Intervals between bills (at most a year in all).",
            ),
            optional(
                "recurring[usage_type]",
                Enum(&["licensed"]),
                "Only `licensed`.",
            ),
            optional(
                "tax_behavior",
                Enum(&["exclusive", "inclusive", "unspecified"]),
                "Whether the amount includes tax.",
            ),
            optional("billing_scheme", Enum(&["per_unit"]), "Only `per_unit`."),
            optional("nickname", Text, "Shown to you."),
            optional(
                "lookup_key",
                Text,
                "Unique per project; find the price by it.",
            ),
            optional(
                "transfer_lookup_key",
                Boolean,
                "Take the lookup key from the price that has it.",
            ),
            optional("active", Boolean, "Default `true`."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("price"),
        errors: &[],
        example: &[
            ("product", "prod_NWjs8kKbJWmuuc"),
            ("unit_amount", "1200"),
            ("currency", "gbp"),
            ("recurring[interval]", "month"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Prices",
        method: Get,
        path: "/v1/prices",
        handler: "prices::list",
        summary: "List prices",
        description: "",
        params: &[
            optional("active", Boolean, "Only active (or archived) prices."),
            optional("type", Enum(&["one_time", "recurring"]), "Only this type."),
            optional("currency", Text, "Only this currency."),
            optional("product", Text, "Only this product's."),
            optional("lookup_keys", StringList, "Only these lookup keys."),
            optional(
                "recurring[interval]",
                Enum(&["day", "week", "month", "year"]),
                "Only this interval.",
            ),
        ],
        expand: true,
        returns: Returns::List("price"),
        errors: &[],
        example: &[("product", "prod_NWjs8kKbJWmuuc")],
        example_id: "",
    },
    Endpoint {
        resource: "Prices",
        method: Get,
        path: "/v1/prices/{id}",
        handler: "prices::retrieve",
        summary: "Retrieve a price",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("price"),
        errors: &[],
        example: &[],
        example_id: "price_1MoBy5LkdIwHu7ix",
    },
    Endpoint {
        resource: "Prices",
        method: Post,
        path: "/v1/prices/{id}",
        handler: "prices::update",
        summary: "Update a price",
        description: "Archive with `active=false`; prices are never deleted.",
        params: &[
            optional("active", Boolean, "Archive with `false`."),
            optional("nickname", Text, "Shown to you."),
            optional("lookup_key", Text, "Unique per project."),
            optional(
                "transfer_lookup_key",
                Boolean,
                "Take the lookup key from the price that has it.",
            ),
            optional(
                "tax_behavior",
                Enum(&["exclusive", "inclusive", "unspecified"]),
                "Only while `unspecified`.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("price"),
        errors: &[],
        example: &[("lookup_key", "gold_monthly")],
        example_id: "price_1MoBy5LkdIwHu7ix",
    },
    // Tax rates
    Endpoint {
        resource: "Tax rates",
        method: Post,
        path: "/v1/tax_rates",
        handler: "tax_rates::create",
        summary: "Create a tax rate",
        description: "`percentage` and `inclusive` are fixed once created.",
        params: &[
            required("display_name", Text, "Shown on invoices, e.g. `VAT`."),
            required("percentage", Text, "A decimal, e.g. `20` or `7.5`."),
            required("inclusive", Boolean, "Whether prices already include it."),
            optional("active", Boolean, "Default `true`."),
            DESCRIPTION,
            optional("jurisdiction", Text, "Shown on invoices."),
            optional("country", Text, "ISO country code."),
            optional("state", Text, "ISO subdivision code."),
            optional("tax_type", Text, "e.g. `vat`, `sales_tax`."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("tax_rate"),
        errors: &[],
        example: &[
            ("display_name", "VAT"),
            ("percentage", "20"),
            ("inclusive", "false"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Tax rates",
        method: Get,
        path: "/v1/tax_rates",
        handler: "tax_rates::list",
        summary: "List tax rates",
        description: "",
        params: &[
            optional("active", Boolean, "Only active (or archived) rates."),
            optional("inclusive", Boolean, "Only inclusive (or exclusive) rates."),
        ],
        expand: true,
        returns: Returns::List("tax_rate"),
        errors: &[],
        example: &[],
        example_id: "",
    },
    Endpoint {
        resource: "Tax rates",
        method: Get,
        path: "/v1/tax_rates/{id}",
        handler: "tax_rates::retrieve",
        summary: "Retrieve a tax rate",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("tax_rate"),
        errors: &[],
        example: &[],
        example_id: "txr_1MzS4RLkdIwHu7ix",
    },
    Endpoint {
        resource: "Tax rates",
        method: Post,
        path: "/v1/tax_rates/{id}",
        handler: "tax_rates::update",
        summary: "Update a tax rate",
        description: "",
        params: &[
            optional("active", Boolean, "Archive with `false`."),
            optional("display_name", Text, "Shown on invoices."),
            DESCRIPTION,
            optional("jurisdiction", Text, "Shown on invoices."),
            optional("country", Text, "ISO country code."),
            optional("state", Text, "ISO subdivision code."),
            optional("tax_type", Text, "e.g. `vat`."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("tax_rate"),
        errors: &[],
        example: &[("active", "false")],
        example_id: "txr_1MzS4RLkdIwHu7ix",
    },
    // Invoices
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices",
        handler: "invoices::create",
        summary: "Create an invoice",
        description: "A draft for the customer, with their pending invoice items unless told \
                      otherwise.",
        params: &[
            required("customer", Text, "The customer (`cus_…`)."),
            optional("currency", Text, "Lowercase ISO code."),
            optional(
                "auto_advance",
                Boolean,
                "Finalize and charge it automatically.",
            ),
            DESCRIPTION,
            optional("footer", Text, "Shown at the bottom."),
            optional(
                "default_payment_method",
                Text,
                "The payment method (`pm_…`) to charge.",
            ),
            optional(
                "pending_invoice_items_behavior",
                Enum(&["include", "exclude"]),
                "Whether pending invoice items go onto it (default `include`).",
            ),
            optional(
                "collection_method",
                Enum(&["charge_automatically"]),
                "Only `charge_automatically`.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "",
    },
    Endpoint {
        resource: "Invoices",
        method: Get,
        path: "/v1/invoices",
        handler: "invoices::list",
        summary: "List invoices",
        description: "",
        params: &[
            optional("customer", Text, "Only this customer's."),
            optional("subscription", Text, "Only this subscription's."),
            optional(
                "status",
                Enum(&["draft", "open", "paid", "uncollectible", "void"]),
                "Only this status.",
            ),
            optional(
                "collection_method",
                Text,
                "Accepted for compatibility (every invoice is charged automatically).",
            ),
        ],
        expand: true,
        returns: Returns::List("invoice"),
        errors: &[],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "",
    },
    Endpoint {
        resource: "Invoices",
        method: Get,
        path: "/v1/invoices/{id}",
        handler: "invoices::retrieve",
        summary: "Retrieve an invoice",
        description: "`hosted_invoice_url` and `invoice_pdf` are pages anyone with the link \
                      may open.",
        params: &[],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices/{id}",
        handler: "invoices::update",
        summary: "Update an invoice",
        description: "A draft only.",
        params: &[
            DESCRIPTION,
            optional("footer", Text, "Shown at the bottom."),
            optional("auto_advance", Boolean, "Finalize and charge it automatically."),
            optional(
                "default_payment_method",
                Text,
                "The payment method (`pm_…`).",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[("footer", "Thank you!")],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Delete,
        path: "/v1/invoices/{id}",
        handler: "invoices::delete",
        summary: "Delete a draft invoice",
        description: "Finalized invoices are voided instead.",
        params: &[],
        expand: true,
        returns: Returns::Deleted("invoice"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices/{id}/finalize",
        handler: "invoices::finalize",
        summary: "Finalize an invoice",
        description: "Numbers it and makes it `open` (or `paid` when nothing is due).",
        params: &[optional("auto_advance", Boolean, "Charge it automatically.")],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices/{id}/pay",
        handler: "invoices::pay",
        summary: "Pay an invoice",
        description: "Charges the payment method now, or records a payment made elsewhere.",
        params: &[
            optional(
                "payment_method",
                Text,
                "Default: the invoice's, then the customer's.",
            ),
            optional(
                "paid_out_of_band",
                Boolean,
                "Mark it paid without charging.",
            ),
            optional("off_session", Boolean, "Accepted for compatibility."),
        ],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[CARD_DECLINED],
        example: &[("payment_method", "pm_1MqLiJLkdIwHu7ix")],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices/{id}/void",
        handler: "invoices::void",
        summary: "Void an invoice",
        description: "An open invoice that will not be paid.",
        params: &[],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Post,
        path: "/v1/invoices/{id}/mark_uncollectible",
        handler: "invoices::mark_uncollectible",
        summary: "Mark an invoice uncollectible",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("invoice"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoices",
        method: Get,
        path: "/v1/invoices/{id}/lines",
        handler: "invoices::lines",
        summary: "List an invoice's lines",
        description: "",
        params: &[],
        expand: false,
        returns: Returns::List("line_item"),
        errors: &[],
        example: &[],
        example_id: "in_1MtHbELkdIwHu7ix",
    },
    // Invoice items
    Endpoint {
        resource: "Invoice items",
        method: Post,
        path: "/v1/invoiceitems",
        handler: "invoice_items::create",
        summary: "Create an invoice item",
        description: "Pending until the customer's next invoice, or on the draft given.",
        params: &[
            required("customer", Text, "The customer (`cus_…`)."),
            optional("invoice", Text, "A draft invoice (`in_…`) to add it to."),
            optional("price", Text, "A one-time price (`price_…`)."),
            optional("pricing[price]", Text, "The same, Stripe's newer spelling."),
            optional("amount", Integer, "A total in the minor unit (instead of a price)."),
            optional("unit_amount", Integer, "Per unit, in the minor unit."),
            optional(
                "unit_amount_decimal",
                Text,
                "Per unit, whole minor units only.",
            ),
            optional("quantity", Integer, "Default 1."),
            optional("currency", Text, "Lowercase ISO code (with an amount)."),
            DESCRIPTION,
            optional("tax_rates", StringList, "Tax rates (`txr_…`)."),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("invoiceitem"),
        errors: &[],
        example: &[
            ("customer", "cus_NffrFeUfNV2Hib"),
            ("amount", "1500"),
            ("currency", "gbp"),
            ("description", "Set-up fee"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Invoice items",
        method: Get,
        path: "/v1/invoiceitems",
        handler: "invoice_items::list",
        summary: "List invoice items",
        description: "",
        params: &[
            optional("customer", Text, "Only this customer's."),
            optional("invoice", Text, "Only this invoice's."),
            optional("pending", Boolean, "Only those not yet on an invoice."),
        ],
        expand: true,
        returns: Returns::List("invoiceitem"),
        errors: &[],
        example: &[("pending", "true")],
        example_id: "",
    },
    Endpoint {
        resource: "Invoice items",
        method: Get,
        path: "/v1/invoiceitems/{id}",
        handler: "invoice_items::retrieve",
        summary: "Retrieve an invoice item",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("invoiceitem"),
        errors: &[],
        example: &[],
        example_id: "ii_1MtGUtLkdIwHu7ix",
    },
    Endpoint {
        resource: "Invoice items",
        method: Delete,
        path: "/v1/invoiceitems/{id}",
        handler: "invoice_items::delete",
        summary: "Delete an invoice item",
        description: "While pending or on a draft.",
        params: &[],
        expand: true,
        returns: Returns::Deleted("invoiceitem"),
        errors: &[],
        example: &[],
        example_id: "ii_1MtGUtLkdIwHu7ix",
    },
    // Subscriptions
    Endpoint {
        resource: "Subscriptions",
        method: Post,
        path: "/v1/subscriptions",
        handler: "subscriptions::create",
        summary: "Create a subscription",
        description: "Bills the first period at once (unless trialing) and renews every \
                      period; failed renewals are retried on the project's dunning schedule.",
        params: &[
            required("customer", Text, "The customer (`cus_…`)."),
            required("items[][price]", Text, "A recurring price (`price_…`)."),
            optional("items[][quantity]", Integer, "Default 1."),
            optional(
                "default_payment_method",
                Text,
                "Default: the customer's invoice settings.",
            ),
            optional("default_tax_rates", StringList, "Tax rates (`txr_…`)."),
            optional("trial_end", Timestamp, "Unix time, or `now`."),
            optional("trial_period_days", Integer, "0 to 730."),
            optional(
                "payment_behavior",
                Enum(&[
                    "allow_incomplete",
                    "default_incomplete",
                    "error_if_incomplete",
                ]),
                "What a failed first payment does.",
            ),
            optional(
                "collection_method",
                Enum(&["charge_automatically"]),
                "Only `charge_automatically`.",
            ),
            optional("off_session", Boolean, "Accepted for compatibility."),
            optional(
                "proration_behavior",
                Enum(&["create_prorations", "none", "always_invoice"]),
                "Accepted for compatibility.",
            ),
            optional(
                "cancel_at_period_end",
                Boolean,
                "End when the first period does.",
            ),
            DESCRIPTION,
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("subscription"),
        errors: &[CARD_DECLINED],
        example: &[
            ("customer", "cus_NffrFeUfNV2Hib"),
            ("items[0][price]", "price_1MoBy5LkdIwHu7ix"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Subscriptions",
        method: Get,
        path: "/v1/subscriptions",
        handler: "subscriptions::list",
        summary: "List subscriptions",
        description: "",
        params: &[
            optional("customer", Text, "Only this customer's."),
            optional(
                "status",
                Text,
                "Only this status (`active`, `past_due`, …; `all` includes canceled).",
            ),
            optional("price", Text, "Only those with this price."),
            optional("test_clock", Text, "Accepted for compatibility."),
        ],
        expand: true,
        returns: Returns::List("subscription"),
        errors: &[],
        example: &[("customer", "cus_NffrFeUfNV2Hib")],
        example_id: "",
    },
    Endpoint {
        resource: "Subscriptions",
        method: Get,
        path: "/v1/subscriptions/{id}",
        handler: "subscriptions::retrieve",
        summary: "Retrieve a subscription",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Object("subscription"),
        errors: &[],
        example: &[],
        example_id: "sub_1MowQVLkdIwHu7ix",
    },
    Endpoint {
        resource: "Subscriptions",
        method: Post,
        path: "/v1/subscriptions/{id}",
        handler: "subscriptions::update",
        summary: "Update a subscription",
        description: "",
        params: &[
            optional(
                "cancel_at_period_end",
                Boolean,
                "End when the current period does.",
            ),
            optional("default_payment_method", Text, "The payment method (`pm_…`)."),
            DESCRIPTION,
            METADATA,
            optional("items[][id]", Text, "An item (`si_…`) to change."),
            optional("items[][price]", Text, "Its new price, or a new item's."),
            optional("items[][quantity]", Integer, "Its quantity."),
            optional("items[][deleted]", Boolean, "Remove the item."),
            optional(
                "proration_behavior",
                Enum(&["create_prorations", "none"]),
                "Accepted for compatibility.",
            ),
            optional(
                "payment_behavior",
                Enum(&[
                    "allow_incomplete",
                    "default_incomplete",
                    "error_if_incomplete",
                    "pending_if_incomplete",
                ]),
                "Accepted for compatibility.",
            ),
        ],
        expand: true,
        returns: Returns::Object("subscription"),
        errors: &[],
        example: &[("cancel_at_period_end", "true")],
        example_id: "sub_1MowQVLkdIwHu7ix",
    },
    Endpoint {
        resource: "Subscriptions",
        method: Delete,
        path: "/v1/subscriptions/{id}",
        handler: "subscriptions::cancel",
        summary: "Cancel a subscription",
        description: "At once; the answer is the subscription, `canceled`.",
        params: &[
            optional(
                "cancellation_details[feedback]",
                Text,
                "The customer's reason.",
            ),
            optional("cancellation_details[comment]", Text, "Free text."),
            optional("invoice_now", Boolean, "Accepted for compatibility."),
            optional("prorate", Boolean, "Accepted for compatibility."),
        ],
        expand: true,
        returns: Returns::Object("subscription"),
        errors: &[],
        example: &[],
        example_id: "sub_1MowQVLkdIwHu7ix",
    },
    // Test clocks
    Endpoint {
        resource: "Test clocks",
        method: Post,
        path: "/v1/test_helpers/test_clocks",
        handler: "test_clocks::create",
        summary: "Create a test clock",
        description: "Test mode only.",
        params: &[
            required("frozen_time", Timestamp, "The clock's time (unix seconds)."),
            optional("name", Text, "Shown to you."),
        ],
        expand: true,
        returns: Returns::Object("test_helpers.test_clock"),
        errors: &[],
        example: &[("frozen_time", "1767225600"), ("name", "renewals")],
        example_id: "",
    },
    Endpoint {
        resource: "Test clocks",
        method: Get,
        path: "/v1/test_helpers/test_clocks",
        handler: "test_clocks::list",
        summary: "List test clocks",
        description: "",
        params: &[],
        expand: false,
        returns: Returns::List("test_helpers.test_clock"),
        errors: &[],
        example: &[],
        example_id: "",
    },
    Endpoint {
        resource: "Test clocks",
        method: Get,
        path: "/v1/test_helpers/test_clocks/{id}",
        handler: "test_clocks::retrieve",
        summary: "Retrieve a test clock",
        description: "`status` is `advancing` until the work due up to `frozen_time` is done, \
                      then `ready`.",
        params: &[],
        expand: true,
        returns: Returns::Object("test_helpers.test_clock"),
        errors: &[],
        example: &[],
        example_id: "clock_1MsKQ2LkdIwHu7ix",
    },
    Endpoint {
        resource: "Test clocks",
        method: Delete,
        path: "/v1/test_helpers/test_clocks/{id}",
        handler: "test_clocks::delete",
        summary: "Delete a test clock",
        description: "",
        params: &[],
        expand: true,
        returns: Returns::Deleted("test_helpers.test_clock"),
        errors: &[],
        example: &[],
        example_id: "clock_1MsKQ2LkdIwHu7ix",
    },
    Endpoint {
        resource: "Test clocks",
        method: Post,
        path: "/v1/test_helpers/test_clocks/{id}/advance",
        handler: "test_clocks::advance",
        summary: "Advance a test clock",
        description: "Moves the clock forward; renewals, retries and expiries due by then run. \
                      Answers `advancing`; poll until `ready`.",
        params: &[required(
            "frozen_time",
            Timestamp,
            "The new time, later than the current one.",
        )],
        expand: true,
        returns: Returns::Object("test_helpers.test_clock"),
        errors: &[],
        example: &[("frozen_time", "1769904000")],
        example_id: "clock_1MsKQ2LkdIwHu7ix",
    },
    // Checkout Sessions
    Endpoint {
        resource: "Checkout Sessions",
        method: Post,
        path: "/v1/checkout/sessions",
        handler: "checkout_sessions::create",
        summary: "Create a Checkout Session",
        description: "Send the customer to `url`; they come back to `success_url` once paid.",
        params: &[
            required(
                "mode",
                Enum(&["payment", "subscription", "setup"]),
                "One-off payment, subscription, or saving a card.",
            ),
            required("success_url", Text, "Absolute http(s) URL."),
            optional("cancel_url", Text, "Absolute http(s) URL."),
            optional(
                "line_items[][price]",
                Text,
                "A price (`price_…`); this or `price_data`.",
            ),
            optional("line_items[][quantity]", Integer, "Default 1."),
            optional(
                "line_items[][price_data][currency]",
                Text,
                "An inline price's currency.",
            ),
            optional(
                "line_items[][price_data][unit_amount]",
                Integer,
                "… its amount in the minor unit.",
            ),
            optional(
                "line_items[][price_data][product_data][name]",
                Text,
                "… its product's name.",
            ),
            optional(
                "line_items[][price_data][recurring][interval]",
                Enum(&["day", "week", "month", "year"]),
                "… its interval (subscription mode).",
            ),
            optional(
                "line_items[][price_data][tax_behavior]",
                Enum(&["unspecified", "exclusive", "inclusive"]),
                "… its tax behaviour.",
            ),
            optional("customer", Text, "The customer (`cus_…`); not with `customer_email`."),
            optional("customer_email", Text, "Prefills the email."),
            optional(
                "expires_at",
                Timestamp,
                "30 minutes to 24 hours from now (default 24 hours).",
            ),
            optional("payment_method_types", StringList, "Only `card`."),
            optional(
                "ui_mode",
                Enum(&["hosted_page", "hosted"]),
                "Only the hosted page.",
            ),
            METADATA,
        ],
        expand: true,
        returns: Returns::Object("checkout.session"),
        errors: &[],
        example: &[
            ("mode", "payment"),
            ("line_items[0][price]", "price_1MoBy5LkdIwHu7ix"),
            ("line_items[0][quantity]", "1"),
            ("success_url", "https://example.com/thanks"),
        ],
        example_id: "",
    },
    Endpoint {
        resource: "Checkout Sessions",
        method: Get,
        path: "/v1/checkout/sessions",
        handler: "checkout_sessions::list",
        summary: "List Checkout Sessions",
        description: "",
        params: &[
            optional("customer", Text, "Only this customer's."),
            optional("payment_intent", Text, "Only the one with this payment intent."),
        ],
        expand: false,
        returns: Returns::List("checkout.session"),
        errors: &[],
        example: &[],
        example_id: "",
    },
    Endpoint {
        resource: "Checkout Sessions",
        method: Get,
        path: "/v1/checkout/sessions/{id}",
        handler: "checkout_sessions::retrieve",
        summary: "Retrieve a Checkout Session",
        description: "`expand[]=line_items` includes the line items.",
        params: &[],
        expand: true,
        returns: Returns::Object("checkout.session"),
        errors: &[],
        example: &[],
        example_id: "cs_test_a1b2c3",
    },
    Endpoint {
        resource: "Checkout Sessions",
        method: Post,
        path: "/v1/checkout/sessions/{id}/expire",
        handler: "checkout_sessions::expire",
        summary: "Expire a Checkout Session",
        description: "An open session can no longer be paid.",
        params: &[],
        expand: true,
        returns: Returns::Object("checkout.session"),
        errors: &[],
        example: &[],
        example_id: "cs_test_a1b2c3",
    },
    Endpoint {
        resource: "Checkout Sessions",
        method: Get,
        path: "/v1/checkout/sessions/{id}/line_items",
        handler: "checkout_sessions::line_items",
        summary: "List a Checkout Session's line items",
        description: "",
        params: &[],
        expand: false,
        returns: Returns::List("item"),
        errors: &[],
        example: &[],
        example_id: "cs_test_a1b2c3",
    },
    Endpoint {
        resource: "Checkout Sessions",
        method: Post,
        path: "/v1/test_helpers/checkout/sessions/{id}/complete",
        handler: "checkout_sessions::complete_for_test",
        summary: "Complete a Checkout Session (test helper)",
        description: "Test mode only: completes the session as if the customer had paid on \
                      the hosted page.",
        params: &[required(
            "payment_method",
            Text,
            "A test payment method, e.g. `pm_card_visa`.",
        )],
        expand: true,
        returns: Returns::Object("checkout.session"),
        errors: &[CARD_DECLINED],
        example: &[("payment_method", "pm_card_visa")],
        example_id: "cs_test_a1b2c3",
    },
    // Customer portal
    Endpoint {
        resource: "Customer portal",
        method: Post,
        path: "/v1/billing_portal/sessions",
        handler: "billing_portal::create",
        summary: "Create a portal session",
        description: "Send the customer to `url` (a short-lived link); they come back to \
                      `return_url`.",
        params: &[
            required("customer", Text, "The customer (`cus_…`)."),
            optional("return_url", Text, "Absolute http(s) URL of your site."),
            optional("configuration", Text, "Accepted and echoed."),
            optional("locale", Text, "Accepted and echoed."),
            optional("on_behalf_of", Text, "Accepted for compatibility."),
        ],
        expand: true,
        returns: Returns::Object("billing_portal.session"),
        errors: &[],
        example: &[
            ("customer", "cus_NffrFeUfNV2Hib"),
            ("return_url", "https://example.com/account"),
        ],
        example_id: "",
    },
];

/// The base URL the examples use (the default `serve` address).
pub const EXAMPLE_BASE_URL: &str = "http://127.0.0.1:8080";

/// The errors any authenticated `/v1` request can meet.
const COMMON_ERRORS: &[ErrorCase] = &[
    error(
        400,
        "invalid_request_error",
        Some("parameter_missing"),
        "A parameter is missing, invalid or unknown (`param` names it).",
    ),
    error(401, "invalid_request_error", None, "No valid API key."),
    error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        "Too many requests for this key; see `Retry-After`.",
    ),
    error(500, "api_error", None, "Something went wrong on our side."),
];

const MISSING: ErrorCase = error(
    404,
    "invalid_request_error",
    Some("resource_missing"),
    "No such object in this project and mode.",
);

const IDEMPOTENCY_ERRORS: &[ErrorCase] = &[
    error(
        400,
        "idempotency_error",
        None,
        "The `Idempotency-Key` was used before with other parameters.",
    ),
    error(
        409,
        "invalid_request_error",
        Some("idempotency_key_in_use"),
        "Another request with the same `Idempotency-Key` is still running; retry.",
    ),
];

impl Endpoint {
    /// A stable operation id, e.g. `PostCustomersId`.
    pub fn operation_id(&self) -> String {
        let method = match self.method {
            Method::Get => "Get",
            Method::Post => "Post",
            Method::Delete => "Delete",
        };
        let mut id = String::from(method);
        for segment in self.path.trim_start_matches("/v1/").split('/') {
            let word = segment.trim_matches(|c| c == '{' || c == '}');
            for part in word.split(['_', '.']) {
                let mut chars = part.chars();
                if let Some(first) = chars.next() {
                    id.extend(first.to_uppercase());
                    id.push_str(chars.as_str());
                }
            }
        }
        id
    }

    /// The `{name}` segments of the path.
    pub fn path_params(&self) -> Vec<&'static str> {
        self.path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect()
    }

    /// Whether it changes anything (and so takes an `Idempotency-Key`).
    pub fn is_write(&self) -> bool {
        self.method != Method::Get
    }

    /// Every parameter besides the path's: its own, the paging ones on lists, `expand[]`.
    pub fn all_params(&self) -> Vec<Param> {
        let mut params = self.params.to_vec();
        if matches!(self.returns, Returns::List(_)) {
            params.push(optional(
                "limit",
                Integer,
                "How many objects, 1–100 (default 10).",
            ));
            params.push(optional(
                "starting_after",
                Text,
                "An object id: the page after it (newest first).",
            ));
            params.push(optional(
                "ending_before",
                Text,
                "An object id: the page before it.",
            ));
        }
        if self.expand {
            params.push(optional(
                "expand",
                StringList,
                "Fields to expand into objects (`expand[]=customer`, dot paths for nesting).",
            ));
        }
        params
    }

    /// The endpoint's errors: its own, then those every such request can meet.
    pub fn errors(&self) -> Vec<ErrorCase> {
        let mut errors = self.errors.to_vec();
        if !self.path_params().is_empty() {
            errors.push(MISSING);
        }
        if self.is_write() {
            errors.extend_from_slice(IDEMPOTENCY_ERRORS);
        }
        errors.extend_from_slice(COMMON_ERRORS);
        errors.sort_by_key(|error| error.status);
        errors
    }

    /// The curl command of the example.
    pub fn curl(&self) -> String {
        let path = self.path.replace("{id}", self.example_id);
        let mut command = match self.method {
            Method::Get if !self.example.is_empty() => {
                format!("curl -G {EXAMPLE_BASE_URL}{path} \\\n  -u sk_test_…:")
            }
            Method::Get | Method::Post => {
                format!("curl {EXAMPLE_BASE_URL}{path} \\\n  -u sk_test_…:")
            }
            Method::Delete => {
                format!("curl -X DELETE {EXAMPLE_BASE_URL}{path} \\\n  -u sk_test_…:")
            }
        };
        if self.method == Method::Post && self.example.is_empty() {
            command.push_str(" \\\n  -X POST");
        }
        for (name, value) in self.example {
            command.push_str(&format!(" \\\n  -d \"{name}={value}\""));
        }
        command
    }

    /// An HTML anchor for the endpoint.
    pub fn anchor(&self) -> String {
        self.operation_id()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// `(method, path)` of every route `v1::routes()` registers, read from the router's
    /// `Debug` output (axum offers no other way to list routes):
    /// `routes: {RouteId(3): MethodRouter(MethodRouter { get: BoxedHandler, … }), …}` and
    /// `paths: {RouteId(3): "/v1/customers", …}`. If axum changes that format this finds
    /// nothing and the test fails loudly rather than passing.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let text = format!("{:?}", crate::v1::routes());
        let text = text.split("fallback_router").next().unwrap_or("");
        let (routes, paths) = text.split_once("paths: {").unwrap_or(("", ""));
        let route_id = |chunk: &str| -> Option<String> {
            let digits: String = chunk.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty()).then_some(digits)
        };
        let mut methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for chunk in routes.split("RouteId(").skip(1) {
            let Some(id) = route_id(chunk) else { continue };
            for method in ["get", "post", "delete", "put", "patch"] {
                let taken = chunk
                    .split_once(&format!(" {method}: "))
                    .is_some_and(|(_, rest)| !rest.starts_with("None"));
                if taken {
                    methods
                        .entry(id.clone())
                        .or_default()
                        .insert(method.to_uppercase());
                }
            }
        }
        let mut found = BTreeSet::new();
        for chunk in paths.split("RouteId(").skip(1) {
            let Some(id) = route_id(chunk) else { continue };
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            for method in methods.get(&id).into_iter().flatten() {
                found.insert((method.clone(), path.to_owned()));
            }
        }
        found
    }

    #[test]
    fn every_route_has_a_registry_entry_and_every_entry_a_route() {
        let routes = registered_routes();
        assert!(
            routes.len() > 50,
            "could not read the router's routes (axum's Debug output changed?): {routes:?}"
        );
        let documented: BTreeSet<(String, String)> = ENDPOINTS
            .iter()
            .map(|endpoint| {
                (
                    endpoint.method.as_str().to_owned(),
                    endpoint.path.to_owned(),
                )
            })
            .collect();
        assert_eq!(
            documented.len(),
            ENDPOINTS.len(),
            "an endpoint is listed twice"
        );
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes without a docs::registry entry: {undocumented:?}; \
             registry entries without a route: {unrouted:?}"
        );
    }

    #[test]
    fn every_endpoint_belongs_to_a_listed_resource_and_has_a_unique_operation_id() {
        let resources: BTreeSet<&str> = RESOURCES.iter().map(|(name, _)| *name).collect();
        let mut ids = BTreeSet::new();
        for endpoint in ENDPOINTS {
            assert!(resources.contains(endpoint.resource), "{}", endpoint.path);
            assert!(ids.insert(endpoint.operation_id()), "{}", endpoint.path);
            assert_eq!(
                endpoint.path_params().is_empty(),
                endpoint.example_id.is_empty(),
                "{} {}: an example id exactly when the path has one",
                endpoint.method.as_str(),
                endpoint.path
            );
        }
    }

    /// The string literals a piece of handler source reads as parameters:
    /// `take_string("name")`, `take_enum(\n "name"`, `url_param(params, "name")`.
    fn literals_taken(source: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find('(') {
            let before = &rest[..at];
            let callee: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after = rest[at + 1..].trim_start();
            let after = after
                .strip_prefix("&mut ")
                .unwrap_or(after)
                .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            let after = after.strip_prefix(',').unwrap_or(after).trim_start();
            let reads = callee.starts_with("take_")
                || callee == "param_name"
                || callee == "url_param"
                || callee == "whole_decimal";
            if reads {
                if let Some(literal) = after.strip_prefix('"') {
                    if let Some(end) = literal.find('"') {
                        let name = &literal[..end];
                        if !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
            rest = &rest[at + 1..];
        }
        names
    }

    /// A top-level function's text: from `fn name(` to the first `}` at column 0.
    fn function_body<'a>(source: &'a str, name: &str) -> Option<&'a str> {
        let start = source.find(&format!("pub async fn {name}("))?;
        let end = source[start..].find("\n}").map(|end| start + end)?;
        Some(&source[start..end])
    }

    fn leaves(name: &str) -> impl Iterator<Item = &str> {
        name.split(['[', ']']).filter(|part| !part.is_empty())
    }

    /// Every parameter name a handler (or its file's helpers) reads is documented for an
    /// endpoint of that file; lists and `expand[]` are documented where the handler takes
    /// them. A parameter added to a handler without its docs fails here.
    #[test]
    fn documented_parameters_match_what_the_handlers_read() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src/v1/");
        let mut by_file: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
        for endpoint in ENDPOINTS {
            let (file, _) = endpoint.handler.split_once("::").expect("module::function");
            by_file.entry(file).or_default().push(endpoint);
        }
        // Literals that name something other than a parameter of the request.
        let not_params = ["card"];
        let mut problems = Vec::new();
        for (file, endpoints) in by_file {
            let source = std::fs::read_to_string(format!("{root}{file}.rs")).expect(file);
            let documented: BTreeSet<&str> = endpoints
                .iter()
                .flat_map(|endpoint| endpoint.params.iter())
                .flat_map(|param| leaves(param.name))
                .collect();
            for name in literals_taken(&source) {
                if !documented.contains(name.as_str()) && !not_params.contains(&name.as_str()) {
                    problems.push(format!("{file}.rs reads `{name}`, documented nowhere"));
                }
            }
            for endpoint in endpoints {
                let (_, function) = endpoint.handler.split_once("::").expect("handler");
                let Some(body) = function_body(&source, function) else {
                    problems.push(format!("no `pub async fn {function}` in {file}.rs"));
                    continue;
                };
                let own: BTreeSet<&str> = endpoint
                    .params
                    .iter()
                    .flat_map(|param| leaves(param.name))
                    .collect();
                for name in literals_taken(body) {
                    if !own.contains(name.as_str()) && !not_params.contains(&name.as_str()) {
                        problems.push(format!(
                            "{}: reads `{name}`, not documented",
                            endpoint.handler
                        ));
                    }
                }
                let pages = body.contains("ListParams::take_from") || body.contains("list_kind(");
                let is_list = matches!(endpoint.returns, Returns::List(_));
                if endpoint.method == Method::Get && pages != is_list {
                    problems.push(format!(
                        "{}: pages {pages}, documented as a list {is_list}",
                        endpoint.handler
                    ));
                }
                let expands = body.contains("take_expand")
                    || body.contains("retrieve_object")
                    || body.contains("WriteRequest");
                if expands != endpoint.expand {
                    problems.push(format!(
                        "{}: takes expand[] {expands}, documented {}",
                        endpoint.handler, endpoint.expand
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn curl_examples_name_the_path_and_key() {
        for endpoint in ENDPOINTS {
            let curl = endpoint.curl();
            assert!(curl.starts_with("curl "), "{curl}");
            assert!(curl.contains("-u sk_test_…:"), "{curl}");
            assert!(!curl.contains('{'), "{curl}");
        }
    }
}

//! The real client against the simulator over real HTTP on 127.0.0.1: the Direct
//! integration end to end.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use cardstream::signature::{sign, verify, SIGNATURE_FIELD};
use cardstream::simulator::SimulatorConfig;
use cardstream::{
    BrowserDetails, CaptureMode, Client, ClientError, CustomerDetails, Decline, Fields, Outcome,
    PaymentSource, RefundMethod, ResponseCode, SignatureError, ThreeDSecure, TransactionState,
    VerifyRequest,
};
use common::{card, card_number, sale, unique, Harness, MerchantSite, MERCHANT_ID, SECRET};

fn decline_code(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Declined(Decline { decline_code, .. }) => decline_code,
        other => panic!("expected a decline, got {other:?}"),
    }
}

fn verify_request(payment_method: &str) -> VerifyRequest {
    VerifyRequest {
        card: card(payment_method),
        currency_code: "GBP".to_string(),
        transaction_unique: unique("verify"),
        order_ref: None,
        customer: CustomerDetails::default(),
        three_d_secure: ThreeDSecure::Skip,
        agreement: Some(cardstream::StoredCardAgreement::CardOnFile),
    }
}

#[tokio::test]
async fn verify_returns_an_xref_and_never_echoes_card_data() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .verify(&verify_request("pm_card_visa"))
        .await
        .expect("verified");
    assert_eq!(response.outcome(), Outcome::Approved);
    assert_eq!(response.state(), Some(TransactionState::Verified));
    assert_eq!(response.card_last4(), Some("0821"));
    assert_eq!(response.card_scheme(), Some("Visa"));
    let xref = response.xref().expect("an xref");
    assert_eq!(xref.len(), 23);
    for (name, value) in response.fields().iter() {
        assert!(
            name != "cardNumber" && name != "cardCVV",
            "{name} was echoed"
        );
        assert!(
            !value.contains("4929421234600821"),
            "{name} carries the card number"
        );
    }
    // The xref pays later without card details: a merchant-initiated renewal.
    let renewal = harness
        .client
        .sale(&sale(
            PaymentSource::StoredCardRecurring {
                xref: xref.to_string(),
            },
            1299,
            CaptureMode::Automatic,
        ))
        .await
        .expect("answered");
    assert_eq!(renewal.outcome(), Outcome::Approved);
    assert_eq!(renewal.get("type"), Some("9"));
    assert_eq!(renewal.amount_received_minor(), Some(1299));
    assert_eq!(
        renewal.card_last4(),
        Some("0821"),
        "the card was cloned from the xref"
    );
    assert_ne!(renewal.xref(), Some(xref), "a repeat is a new transaction");
}

#[tokio::test]
async fn sale_approves_and_captures_at_once() {
    let harness = Harness::start().await;
    for payment_method in ["pm_card_visa", "pm_card_mastercard", "pm_card_amex"] {
        let request = sale(
            PaymentSource::Card(card(payment_method)),
            2500,
            CaptureMode::Automatic,
        );
        let response = harness.client.sale(&request).await.expect("answered");
        assert_eq!(response.outcome(), Outcome::Approved, "{payment_method}");
        assert_eq!(response.state(), Some(TransactionState::Captured));
        assert_eq!(response.amount_received_minor(), Some(2500));
        assert!(response.authorisation_code().is_some());
        assert_eq!(
            response.transaction_unique(),
            Some(request.transaction_unique.as_str())
        );
        assert_eq!(
            response.get("orderRef"),
            Some("Calmony test"),
            "request fields are echoed"
        );
    }
}

#[tokio::test]
async fn declines_follow_the_card_and_map_to_stripe_codes() {
    let harness = Harness::start().await;
    let client = &harness.client;
    let sale_with = |payment_method: &str| {
        sale(
            PaymentSource::Card(card(payment_method)),
            1000,
            CaptureMode::Automatic,
        )
    };

    // pm_card_chargeDeclined: declined at attach (VERIFY) and at charge.
    let verify = client
        .verify(&verify_request("pm_card_chargeDeclined"))
        .await
        .expect("answered");
    assert_eq!(verify.response_code(), ResponseCode::DO_NOT_HONOUR);
    assert_eq!(decline_code(verify.outcome()), "generic_decline");
    let declined = client
        .sale(&sale_with("pm_card_chargeDeclined"))
        .await
        .expect("answered");
    assert_eq!(decline_code(declined.outcome()), "generic_decline");
    assert_eq!(declined.state(), Some(TransactionState::Declined));

    // Insufficient funds: VERIFY checks no funds, the charge fails.
    let verify = client
        .verify(&verify_request("pm_card_chargeDeclinedInsufficientFunds"))
        .await
        .expect("answered");
    assert_eq!(verify.outcome(), Outcome::Approved);
    let declined = client
        .sale(&sale_with("pm_card_chargeDeclinedInsufficientFunds"))
        .await
        .expect("answered");
    assert_eq!(declined.response_code(), ResponseCode::INSUFFICIENT_FUNDS);
    assert_eq!(decline_code(declined.outcome()), "insufficient_funds");

    // Attaches fine, every charge fails, including a renewal on its xref.
    let verify = client
        .verify(&verify_request("pm_card_chargeCustomerFail"))
        .await
        .expect("answered");
    assert_eq!(verify.outcome(), Outcome::Approved);
    let xref = verify.xref().expect("an xref").to_string();
    let renewal = client
        .sale(&sale(
            PaymentSource::StoredCardRecurring { xref },
            1000,
            CaptureMode::Automatic,
        ))
        .await
        .expect("answered");
    assert_eq!(decline_code(renewal.outcome()), "generic_decline");

    // Authentication required, but no browser to authenticate in: the soft decline 65.
    let declined = client
        .sale(&sale_with("pm_card_authenticationRequired"))
        .await
        .expect("answered");
    assert_eq!(declined.response_code(), ResponseCode::SCA_REQUIRED);
    assert_eq!(decline_code(declined.outcome()), "authentication_required");

    // Referral, keep card, lost: the other behaviour cards.
    for (number, expected) in [
        ("4000000000000010", "call_issuer"),
        ("4000000000000044", "pickup_card"),
        ("4000000000009987", "lost_card"),
        ("4000000000000127", "incorrect_cvc"),
    ] {
        let response = client
            .sale(&sale(
                PaymentSource::Card(card_number(number, "123")),
                1000,
                CaptureMode::Automatic,
            ))
            .await
            .expect("answered");
        assert_eq!(decline_code(response.outcome()), expected, "{number}");
    }
}

#[tokio::test]
async fn manual_capture_holds_then_captures_part() {
    let harness = Harness::start().await;
    let client = &harness.client;
    let held = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            5000,
            CaptureMode::Manual,
        ))
        .await
        .expect("answered");
    assert_eq!(held.outcome(), Outcome::Approved);
    assert_eq!(
        held.state(),
        Some(TransactionState::Approved),
        "captureDelay=-1 holds"
    );
    assert_eq!(held.get("captureDelay"), Some("-1"));
    let xref = held.xref().expect("an xref");

    let too_much = client.capture(xref, Some(5001)).await.expect("answered");
    assert_eq!(too_much.response_code(), ResponseCode::INVALID_AMOUNT);
    assert_eq!(
        client.query_by_xref(xref).await.expect("answered").state(),
        Some(TransactionState::Approved),
        "a refused capture changes nothing"
    );

    let captured = client.capture(xref, Some(3500)).await.expect("answered");
    assert_eq!(captured.outcome(), Outcome::Approved);
    assert_eq!(captured.action(), Some("CAPTURE:SALE"));
    assert_eq!(captured.state(), Some(TransactionState::Captured));
    assert_eq!(captured.amount_received_minor(), Some(3500));

    let queried = client.query_by_xref(xref).await.expect("answered");
    assert_eq!(queried.action(), Some("QUERY:SALE"));
    assert_eq!(queried.amount_received_minor(), Some(3500));

    // A declined sale cannot be captured.
    let declined = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_chargeDeclined")),
            5000,
            CaptureMode::Manual,
        ))
        .await
        .expect("answered");
    let refused = client
        .capture(declined.xref().expect("an xref"), None)
        .await
        .expect("answered");
    assert_eq!(refused.response_code(), ResponseCode::ACTION_NOT_ALLOWED);
    assert!(matches!(refused.outcome(), Outcome::Rejected { .. }));
}

#[tokio::test]
async fn cancel_stops_a_held_payment_for_good() {
    let harness = Harness::start().await;
    let client = &harness.client;
    let held = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_mastercard")),
            4000,
            CaptureMode::Manual,
        ))
        .await
        .expect("answered");
    let xref = held.xref().expect("an xref");
    let canceled = client.cancel(xref).await.expect("answered");
    assert_eq!(canceled.outcome(), Outcome::Approved);
    assert_eq!(canceled.action(), Some("CANCEL:SALE"));
    assert_eq!(canceled.state(), Some(TransactionState::Canceled));
    assert_eq!(
        client
            .capture(xref, None)
            .await
            .expect("answered")
            .response_code(),
        ResponseCode::ACTION_NOT_ALLOWED
    );
    assert_eq!(
        client.cancel(xref).await.expect("answered").response_code(),
        ResponseCode::ACTION_NOT_ALLOWED
    );
    assert_eq!(
        harness.settle().await,
        0,
        "a canceled payment never settles"
    );
}

#[tokio::test]
async fn refunds_follow_the_settlement_state() {
    let harness = Harness::start().await;
    let client = &harness.client;
    let paid = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            10_000,
            CaptureMode::Automatic,
        ))
        .await
        .expect("answered");
    let xref = paid.xref().expect("an xref").to_string();

    // Before settlement REFUND_SALE is refused...
    let early = client
        .refund_sale(&xref, Some(1000), &unique("refund"))
        .await
        .expect("answered");
    assert_eq!(early.response_code(), ResponseCode::ACTION_NOT_ALLOWED);

    // ...and the state-aware refund re-captures for less instead.
    let partial = client
        .refund(&xref, 2000, &unique("refund"))
        .await
        .expect("refunded");
    assert_eq!(partial.method, RefundMethod::CaptureReduced);
    assert_eq!(partial.response.amount_received_minor(), Some(8000));

    assert_eq!(harness.settle().await, 1);
    assert_eq!(
        client.query_by_xref(&xref).await.expect("answered").state(),
        Some(TransactionState::Accepted)
    );

    // After settlement: REFUND_SALE, partial and repeated, up to what was received.
    let first = client
        .refund(&xref, 3000, &unique("refund"))
        .await
        .expect("refunded");
    assert_eq!(first.method, RefundMethod::RefundSale);
    assert_eq!(first.response.outcome(), Outcome::Approved);
    assert_eq!(first.response.amount_refunded_minor(), Some(3000));
    assert_ne!(
        first.response.xref(),
        Some(xref.as_str()),
        "a refund is its own transaction"
    );
    let too_much = client
        .refund_sale(&xref, Some(5001), &unique("refund"))
        .await
        .expect("answered");
    assert_eq!(too_much.response_code(), ResponseCode::INVALID_AMOUNT);
    let rest = client
        .refund_sale(&xref, None, &unique("refund"))
        .await
        .expect("answered");
    assert_eq!(rest.outcome(), Outcome::Approved);
    assert_eq!(rest.amount_received_minor(), Some(5000));
    assert_eq!(rest.amount_refunded_minor(), Some(8000));
    let nothing_left = client
        .refund_sale(&xref, Some(1), &unique("refund"))
        .await
        .expect("answered");
    assert_eq!(nothing_left.response_code(), ResponseCode::INVALID_AMOUNT);

    // A refund must go back to the original card (65542).
    let mut other_card = Fields::new();
    other_card.set("merchantID", MERCHANT_ID);
    other_card.set("action", "REFUND_SALE");
    other_card.set("xref", xref.clone());
    other_card.set("amount", "1");
    other_card.set("cardNumber", "4543059999999982");
    let mismatch = client.send(other_card).await.expect("answered");
    assert_eq!(mismatch.response_code(), ResponseCode::REQUEST_MISMATCH);

    // A full refund of a held payment before capture is a cancel.
    let held = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            700,
            CaptureMode::Manual,
        ))
        .await
        .expect("answered");
    let canceled = client
        .refund(held.xref().expect("an xref"), 700, &unique("refund"))
        .await
        .expect("refunded");
    assert_eq!(canceled.method, RefundMethod::Cancelled);
    assert_eq!(canceled.response.state(), Some(TransactionState::Canceled));

    // Nothing to refund on a declined sale.
    let declined = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_chargeDeclined")),
            700,
            CaptureMode::Automatic,
        ))
        .await
        .expect("answered");
    let refused = client
        .refund(declined.xref().expect("an xref"), 700, &unique("refund"))
        .await;
    assert!(matches!(
        refused,
        Err(ClientError::NotRefundable {
            state: Some(TransactionState::Declined),
            ..
        })
    ));
}

#[tokio::test]
async fn duplicates_are_refused_within_the_window_and_queryable() {
    let harness = Harness::start().await;
    let client = &harness.client;
    let request = sale(
        PaymentSource::Card(card("pm_card_visa")),
        1500,
        CaptureMode::Automatic,
    );
    let first = client.sale(&request).await.expect("answered");
    assert_eq!(first.outcome(), Outcome::Approved);
    let again = client.sale(&request).await.expect("answered");
    assert_eq!(again.response_code(), ResponseCode::DUPLICATE_REQUEST);
    assert_eq!(again.outcome(), Outcome::Duplicate);

    // A recovery worker finds the first attempt by our own id.
    let found = client
        .query_by_transaction_unique(&request.transaction_unique)
        .await
        .expect("answered");
    assert_eq!(found.xref(), first.xref());
    assert_eq!(found.state(), Some(TransactionState::Captured));
    let unknown = client
        .query_by_transaction_unique(&unique("never-sent"))
        .await
        .expect("answered");
    assert_eq!(unknown.response_code(), ResponseCode::INVALID_XREF);

    // Another transactionUnique is another request.
    let mut other = request.clone();
    other.transaction_unique = unique("sale");
    assert_eq!(
        client.sale(&other).await.expect("answered").outcome(),
        Outcome::Approved
    );

    // Once duplicateDelay (default 300 s) has passed, the same request goes through.
    harness.advance_clock(301).await;
    assert_eq!(
        client.sale(&request).await.expect("answered").outcome(),
        Outcome::Approved
    );

    // A shorter duplicateDelay is honoured.
    let mut short = sale(
        PaymentSource::Card(card("pm_card_visa")),
        1600,
        CaptureMode::Automatic,
    );
    short.duplicate_delay_seconds = Some(10);
    client.sale(&short).await.expect("answered");
    assert_eq!(
        client.sale(&short).await.expect("answered").outcome(),
        Outcome::Duplicate
    );
    harness.advance_clock(11).await;
    assert_eq!(
        client.sale(&short).await.expect("answered").outcome(),
        Outcome::Approved
    );
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused() {
    let harness = Harness::start().await;
    let mut request = Fields::new();
    request.set("merchantID", MERCHANT_ID);
    request.set("action", "SALE");
    request.set("type", "1");
    request.set("amount", "1000");
    request.set("currencyCode", "826");
    request.set("countryCode", "826");
    request.set("transactionUnique", unique("forged"));
    request.set("cardNumber", "4929421234600821");
    request.set("cardExpiryMonth", "1");
    request.set("cardExpiryYear", "40");

    let mut wrong_secret = request.clone();
    wrong_secret.set(SIGNATURE_FIELD, sign(&request, "not the secret"));
    let answer = harness.post_direct_raw(&wrong_secret).await;
    assert_eq!(answer.get("responseCode"), Some("65539"));
    assert!(answer.get("xref").is_none(), "no transaction was made");
    assert!(
        verify(&answer, Some(SECRET)).is_ok(),
        "the refusal is signed for the merchant"
    );

    let mut altered = request.clone();
    altered.set(SIGNATURE_FIELD, sign(&request, SECRET));
    altered.set("amount", "1");
    assert_eq!(
        harness.post_direct_raw(&altered).await.get("responseCode"),
        Some("65539")
    );

    assert_eq!(
        harness.post_direct_raw(&request).await.get("responseCode"),
        Some("66087"),
        "this merchant requires signatures"
    );

    let mut unknown_merchant = request.clone();
    unknown_merchant.set("merchantID", "999999");
    unknown_merchant.set(SIGNATURE_FIELD, sign(&unknown_merchant, SECRET));
    let answer = harness.post_direct_raw(&unknown_merchant).await;
    assert_eq!(answer.get("responseCode"), Some("65539"));
    assert!(answer.get(SIGNATURE_FIELD).is_none());

    let mut signed = request.clone();
    signed.set(SIGNATURE_FIELD, sign(&request, SECRET));
    assert_eq!(
        harness.post_direct_raw(&signed).await.get("responseCode"),
        Some("0")
    );

    // A client configured with the wrong secret cannot trust what comes back.
    let mut config = harness
        .simulator
        .client_config(MERCHANT_ID, "not the secret");
    config.timeouts.request_timeout_ms = 5_000;
    let wrong_client = Client::new(config).expect("a config");
    let refused = wrong_client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            1000,
            CaptureMode::Automatic,
        ))
        .await;
    assert!(matches!(
        refused,
        Err(ClientError::Signature(SignatureError::Mismatch))
    ));
}

/// A man in the middle that rewrites the simulator's answers before the client sees them.
async fn tampering_proxy(direct_url: String, rewrite: fn(String) -> String) -> String {
    #[derive(Clone)]
    struct Proxy {
        direct_url: String,
        rewrite: fn(String) -> String,
        http: reqwest::Client,
    }
    async fn forward(State(proxy): State<Proxy>, body: Bytes) -> String {
        let answer = proxy
            .http
            .post(&proxy.direct_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the simulator answers");
        (proxy.rewrite)(answer.text().await.expect("a body"))
    }
    let proxy = Proxy {
        direct_url,
        rewrite,
        http: reqwest::Client::new(),
    };
    let router = Router::new()
        .route("/direct/", post(forward))
        .with_state(proxy);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("binds");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}/direct/")
}

#[tokio::test]
async fn tampered_responses_are_refused_by_the_client() {
    let harness = Harness::start().await;
    let declined_sale = || {
        sale(
            PaymentSource::Card(card("pm_card_chargeDeclined")),
            1000,
            CaptureMode::Automatic,
        )
    };

    let untouched_url = tampering_proxy(harness.simulator.direct_url(), |body| body).await;
    let mut config = harness.simulator.client_config(MERCHANT_ID, SECRET);
    config.direct_url = untouched_url;
    let through_proxy = Client::new(config).expect("a config");
    let honest = through_proxy
        .sale(&declined_sale())
        .await
        .expect("an untouched answer verifies");
    assert_eq!(honest.response_code(), ResponseCode::DO_NOT_HONOUR);

    let flip_url = tampering_proxy(harness.simulator.direct_url(), |body| {
        body.replace("responseCode=5&", "responseCode=0&")
    })
    .await;
    let mut config = harness.simulator.client_config(MERCHANT_ID, SECRET);
    config.direct_url = flip_url;
    let flipped = Client::new(config)
        .expect("a config")
        .sale(&declined_sale())
        .await;
    assert!(matches!(
        flipped,
        Err(ClientError::Signature(SignatureError::Mismatch))
    ));
    assert!(flipped
        .err()
        .is_some_and(|error| error.is_outcome_unknown()));

    let strip_url = tampering_proxy(harness.simulator.direct_url(), |body| {
        body.split('&')
            .filter(|pair| !pair.starts_with("signature="))
            .collect::<Vec<_>>()
            .join("&")
    })
    .await;
    let mut config = harness.simulator.client_config(MERCHANT_ID, SECRET);
    config.direct_url = strip_url;
    let stripped = Client::new(config)
        .expect("a config")
        .sale(&declined_sale())
        .await;
    assert!(matches!(
        stripped,
        Err(ClientError::Signature(SignatureError::Missing))
    ));
}

#[tokio::test]
async fn three_d_secure_challenge_round_trip() {
    let harness = Harness::start().await;
    let mut merchant_site = MerchantSite::start().await;
    let browser = BrowserDetails {
        redirect_url: format!("{}/3ds-return", merchant_site.base_url),
        remote_address: "127.0.0.1".to_string(),
        user_agent: "Mozilla/5.0 (test)".to_string(),
        accept_header: "text/html".to_string(),
        accept_language: "en-GB".to_string(),
        time_zone_offset_minutes: 0,
        screen_resolution: "1920x1080x24".to_string(),
        capabilities: "javascript".to_string(),
    };

    for (outcome, expected_code) in [
        ("pass", ResponseCode::SUCCESS),
        ("fail", ResponseCode::THREE_DS_RESULT_NOT_ACCEPTED),
    ] {
        let mut request = sale(
            PaymentSource::Card(card("pm_card_authenticationRequired")),
            4200,
            CaptureMode::Automatic,
        );
        request.three_d_secure = ThreeDSecure::Browser(browser.clone());
        let first = harness.client.sale(&request).await.expect("answered");
        assert_eq!(
            first.response_code(),
            ResponseCode::THREE_DS_AUTHENTICATION_REQUIRED
        );
        let Outcome::ThreeDSecureRequired(challenge) = first.outcome() else {
            panic!("expected a challenge, got {:?}", first.outcome());
        };

        // The browser posts threeDSRequest to threeDSURL and sees a real challenge page.
        let page = harness
            .browser_post(&challenge.url, &challenge.request_fields)
            .await;
        assert_eq!(page.status, 200);
        assert!(page.html.contains("3-D Secure"));
        assert!(page.html.contains("Card ending 3184"));
        let action = harness.absolute(&page.form_action().expect("a form"));
        let mut choice = page.hidden_inputs();
        choice.push(("outcome".to_string(), outcome.to_string()));

        // The tester's choice comes back as an auto-submitting form to threeDSRedirectURL.
        let returned = harness.browser_post(&action, &choice).await;
        assert_eq!(
            returned.form_action().as_deref(),
            Some(browser.redirect_url.as_str())
        );
        let policy = returned
            .content_security_policy
            .clone()
            .expect("a CSP header");
        assert!(policy.contains("script-src 'nonce-"), "{policy}");
        let posted_to_merchant = harness
            .browser_post(&browser.redirect_url, &returned.hidden_inputs())
            .await;
        assert_eq!(posted_to_merchant.status, 200);
        let acs_post = Fields::parse(&merchant_site.next_post("/3ds-return").await);
        let acs_fields: Vec<(String, String)> = acs_post
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        assert!(acs_post.get("cres").is_some());

        // The continuation finishes the sale.
        let done = harness
            .client
            .continue_three_d_secure(&challenge.three_ds_ref, &acs_fields)
            .await
            .expect("answered");
        assert_eq!(done.response_code(), expected_code, "{outcome}");
        assert_eq!(
            done.transaction_unique(),
            Some(request.transaction_unique.as_str())
        );
        assert_eq!(
            done.get("threeDSRef"),
            Some(challenge.three_ds_ref.as_str()),
            "the continuation is echoed"
        );
        if outcome == "pass" {
            assert_eq!(done.get("threeDSAuthenticated"), Some("Y"));
            assert_eq!(done.state(), Some(TransactionState::Captured));
            assert_eq!(done.amount_received_minor(), Some(4200));
        } else {
            assert_eq!(done.get("threeDSAuthenticated"), Some("N"));
            assert_eq!(done.state(), Some(TransactionState::Declined));
            assert_eq!(decline_code(done.outcome()), "authentication_required");
        }
        // The reference is single-use.
        let reused = harness
            .client
            .continue_three_d_secure(&challenge.three_ds_ref, &acs_fields)
            .await
            .expect("answered");
        assert_eq!(reused.response_code(), ResponseCode::REQUEST_EXPIRED);
    }

    // Other cards authenticate without a challenge.
    let mut frictionless = sale(
        PaymentSource::Card(card("pm_card_visa")),
        4200,
        CaptureMode::Automatic,
    );
    frictionless.three_d_secure = ThreeDSecure::Browser(browser);
    let response = harness.client.sale(&frictionless).await.expect("answered");
    assert_eq!(response.outcome(), Outcome::Approved);
    assert_eq!(response.get("threeDSAuthenticated"), Some("Y"));
}

#[tokio::test]
async fn strict_mode_applies_the_test_amount_ranges() {
    let mut config = SimulatorConfig::demo();
    config.strict_test_amounts = true;
    let harness = Harness::start_with(config).await;
    let client = &harness.client;
    // Even the declining card follows the amount in strict mode.
    let cases = [
        (1000, "pm_card_chargeDeclined", ResponseCode::SUCCESS),
        (3000, "pm_card_visa", ResponseCode::SUCCESS),
        (5000, "pm_card_visa", ResponseCode::CARD_REFERRED),
        (10_000, "pm_card_visa", ResponseCode::DO_NOT_HONOUR),
        (15_000, "pm_card_visa", ResponseCode::KEEP_CARD),
        (50, "pm_card_visa", ResponseCode::INVALID_TEST_AMOUNT),
    ];
    let mut xref_for_3000 = None;
    for (amount, payment_method, expected) in cases {
        let response = client
            .sale(&sale(
                PaymentSource::Card(card(payment_method)),
                amount,
                CaptureMode::Automatic,
            ))
            .await
            .expect("answered");
        assert_eq!(response.response_code(), expected, "amount {amount}");
        if amount == 3000 {
            xref_for_3000 = response.xref().map(str::to_string);
        }
    }
    // 20000–24999: SCA required when eligible (3-D Secure on, not authenticated), else 0.
    let mut eligible = sale(
        PaymentSource::Card(card("pm_card_visa")),
        20_000,
        CaptureMode::Automatic,
    );
    eligible.three_d_secure = ThreeDSecure::AccountDefault;
    assert_eq!(
        client
            .sale(&eligible)
            .await
            .expect("answered")
            .response_code(),
        ResponseCode::SCA_REQUIRED
    );
    let not_eligible = sale(
        PaymentSource::Card(card("pm_card_visa")),
        20_000,
        CaptureMode::Automatic,
    );
    assert_eq!(
        client
            .sale(&not_eligible)
            .await
            .expect("answered")
            .response_code(),
        ResponseCode::SUCCESS
    );
    // 2500–4999 authorises but is rejected at settlement.
    harness.settle().await;
    let settled = client
        .query_by_xref(&xref_for_3000.expect("the 3000 sale has an xref"))
        .await
        .expect("answered");
    assert_eq!(settled.state(), Some(TransactionState::Rejected));
}

#[tokio::test]
async fn a_direct_request_with_a_callback_url_gets_a_signed_copy() {
    let harness = Harness::start().await;
    let mut site = MerchantSite::start().await;
    let mut request = Fields::new();
    request.set("merchantID", MERCHANT_ID);
    request.set("action", "SALE");
    request.set("type", "1");
    request.set("amount", "1234");
    request.set("currencyCode", "GBP");
    request.set("countryCode", "826");
    request.set("transactionUnique", unique("callback"));
    request.set("cardNumber", "5301250070000191");
    request.set("cardExpiryMonth", "1");
    request.set(
        "cardExpiryYear",
        format!("{:02}", common::expiry_year() % 100),
    );
    request.set("threeDSRequired", "N");
    request.set("callbackURL", format!("{}/direct-callback", site.base_url));
    let response = harness.client.send(request).await.expect("answered");
    assert_eq!(response.outcome(), Outcome::Approved);
    let copy = Fields::parse(&site.next_post("/direct-callback").await);
    let verified = verify(&copy, Some(SECRET)).expect("the copy is signed");
    assert_eq!(verified.get("xref"), response.xref());
    assert!(verified.get("cardNumber").is_none());
}

#[tokio::test]
async fn captured_payments_settle_by_themselves_after_the_configured_delay() {
    let mut config = SimulatorConfig::demo();
    config.settle_after_seconds = Some(3600);
    let harness = Harness::start_with(config).await;
    let client = &harness.client;
    let paid = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            900,
            CaptureMode::Automatic,
        ))
        .await
        .expect("answered");
    let held = client
        .sale(&sale(
            PaymentSource::Card(card("pm_card_visa")),
            901,
            CaptureMode::Manual,
        ))
        .await
        .expect("answered");
    let xref = paid.xref().expect("an xref");
    harness.advance_clock(3599).await;
    assert_eq!(
        client.query_by_xref(xref).await.expect("answered").state(),
        Some(TransactionState::Captured)
    );
    harness.advance_clock(2).await;
    assert_eq!(
        client.query_by_xref(xref).await.expect("answered").state(),
        Some(TransactionState::Accepted)
    );
    assert_eq!(
        client
            .query_by_xref(held.xref().expect("an xref"))
            .await
            .expect("answered")
            .state(),
        Some(TransactionState::Approved),
        "a held payment is never settled"
    );
    // Settled now, so the refund is a REFUND_SALE.
    let refund = client
        .refund(xref, 900, &unique("refund"))
        .await
        .expect("refunded");
    assert_eq!(refund.method, RefundMethod::RefundSale);
}

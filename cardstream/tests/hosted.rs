//! The Hosted payment page: our signed form, the simulator's real card form, the signed
//! result posted back through the browser and to the callback, and forged returns refused.

mod common;

use cardstream::signature::{sign, SIGNATURE_FIELD};
use cardstream::{
    test_cards, CaptureMode, ClientError, CustomerDetails, Fields, HostedAction,
    HostedPaymentRequest, Outcome, ResponseCode, SignatureError, TransactionState,
};
use common::{expiry_year, unique, BrowserPage, Harness, MerchantSite, SECRET};

fn hosted_request(site: &MerchantSite, amount_minor: u64) -> HostedPaymentRequest {
    HostedPaymentRequest {
        action: HostedAction::Sale,
        amount_minor,
        currency_code: "GBP".to_string(),
        transaction_unique: unique("hosted"),
        order_ref: Some("Order 42".to_string()),
        redirect_url: format!("{}/return", site.base_url),
        callback_url: Some(format!("{}/callback", site.base_url)),
        capture: CaptureMode::Automatic,
        customer: CustomerDetails {
            address: Some("Flat 6 Primrose Rise\r\n347 Lavender Road".to_string()),
            ..CustomerDetails::default()
        },
        agreement: None,
    }
}

fn form_fields(fields: &Fields) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn card_entry(session: &str, payment_method: &str) -> Vec<(String, String)> {
    let card = test_cards::for_payment_method(payment_method).expect("a mapped test card");
    vec![
        ("session".to_string(), session.to_string()),
        ("cardNumber".to_string(), card.number.to_string()),
        ("cardExpiryMonth".to_string(), "01".to_string()),
        (
            "cardExpiryYear".to_string(),
            format!("{:02}", expiry_year() % 100),
        ),
        ("cardCVV".to_string(), card.cvv.to_string()),
    ]
}

/// Opens the hosted page with our signed form, as the cardholder's browser does.
async fn open_card_form(harness: &Harness, request: &HostedPaymentRequest) -> BrowserPage {
    let form = harness.client.hosted_payment_form(request);
    assert_eq!(form.action_url, harness.simulator.hosted_url());
    let page = harness
        .browser_post(&form.action_url, &form_fields(&form.fields))
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    page
}

fn result_body(page: &BrowserPage) -> Vec<u8> {
    let fields: Fields = page.hidden_inputs().into_iter().collect();
    fields.to_form_body().into_bytes()
}

#[tokio::test]
async fn hosted_payment_round_trip_with_signed_return_and_callback() {
    let harness = Harness::start().await;
    let mut site = MerchantSite::start().await;
    let request = hosted_request(&site, 1999);

    let card_form = open_card_form(&harness, &request).await;
    for input in ["cardNumber", "cardExpiryMonth", "cardExpiryYear", "cardCVV"] {
        assert!(card_form.has_input(input), "the card form has {input}");
    }
    assert!(card_form.html.contains("19.99 GBP"));
    let session = card_form.hidden("session").expect("a session");
    let pay_url = harness.absolute(&card_form.form_action().expect("a form"));

    // A typo is shown on the form, not sent to the merchant.
    let mut typo = card_entry(&session, "pm_card_visa");
    typo[1].1 = "4929421234600822".to_string();
    let retry = harness.browser_post(&pay_url, &typo).await;
    assert!(retry.html.contains("Luhn"), "{}", retry.html);
    assert_eq!(retry.hidden("session").as_deref(), Some(session.as_str()));

    let finished = harness
        .browser_post(&pay_url, &card_entry(&session, "pm_card_visa"))
        .await;
    assert_eq!(
        finished.form_action().as_deref(),
        Some(request.redirect_url.as_str())
    );
    let policy = finished
        .content_security_policy
        .clone()
        .expect("a CSP header");
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce");
    assert!(
        finished
            .html
            .contains(&format!("<script nonce=\"{nonce}\">")),
        "the auto-submit script carries the nonce"
    );
    assert!(
        !finished.html.contains("4929421234600821"),
        "the card number never reaches the merchant"
    );

    let body = result_body(&finished);
    let response = harness
        .client
        .verify_hosted_response(&body, &request.transaction_unique)
        .expect("a genuine result verifies");
    assert_eq!(response.outcome(), Outcome::Approved);
    assert_eq!(response.amount_received_minor(), Some(1999));
    assert_eq!(response.state(), Some(TransactionState::Captured));
    assert_eq!(response.card_last4(), Some("0821"));
    let xref = response.xref().expect("an xref").to_string();

    // The server-to-server copy is the same signed result.
    let callback = site.next_post("/callback").await;
    let from_callback = harness
        .client
        .verify_hosted_response(&callback, &request.transaction_unique)
        .expect("the callback verifies");
    assert_eq!(from_callback.xref(), Some(xref.as_str()));

    // The session is single-use.
    let replay = harness
        .browser_post(&pay_url, &card_entry(&session, "pm_card_visa"))
        .await;
    assert_eq!(replay.status, 404);

    // And the payment is a real transaction the Direct API can query.
    let queried = harness.client.query_by_xref(&xref).await.expect("answered");
    assert_eq!(queried.state(), Some(TransactionState::Captured));
}

#[tokio::test]
async fn forged_or_replayed_hosted_returns_are_refused() {
    let harness = Harness::start().await;
    let site = MerchantSite::start().await;
    let request = hosted_request(&site, 12_345);
    let card_form = open_card_form(&harness, &request).await;
    let session = card_form.hidden("session").expect("a session");
    let pay_url = harness.absolute(&card_form.form_action().expect("a form"));
    let declined = harness
        .browser_post(&pay_url, &card_entry(&session, "pm_card_chargeDeclined"))
        .await;
    let genuine: Fields = declined.hidden_inputs().into_iter().collect();
    let response = harness
        .client
        .verify_hosted_response(
            genuine.to_form_body().as_bytes(),
            &request.transaction_unique,
        )
        .expect("the genuine decline verifies");
    assert_eq!(response.response_code(), ResponseCode::DO_NOT_HONOUR);

    // Turning the decline into a success breaks the signature.
    let mut forged = genuine.clone();
    forged.set("responseCode", "0");
    let refused = harness.client.verify_hosted_response(
        forged.to_form_body().as_bytes(),
        &request.transaction_unique,
    );
    assert!(matches!(
        refused,
        Err(ClientError::Signature(SignatureError::Mismatch))
    ));

    // So does signing it with a guessed secret, or dropping the signature.
    let mut guessed = genuine.clone();
    guessed.set("responseCode", "0");
    guessed.remove(SIGNATURE_FIELD);
    let guessed_signature = sign(&guessed, "guess");
    guessed.set(SIGNATURE_FIELD, guessed_signature);
    assert!(harness
        .client
        .verify_hosted_response(
            guessed.to_form_body().as_bytes(),
            &request.transaction_unique
        )
        .is_err());
    let mut unsigned = genuine.clone();
    unsigned.remove(SIGNATURE_FIELD);
    assert!(matches!(
        harness.client.verify_hosted_response(
            unsigned.to_form_body().as_bytes(),
            &request.transaction_unique
        ),
        Err(ClientError::Signature(SignatureError::Missing))
    ));

    // Our own signed request form, replayed with a made-up result, is not a result.
    let mut from_request = harness.client.hosted_payment_form(&request).fields;
    from_request.set("responseCode", "0");
    assert!(harness
        .client
        .verify_hosted_response(
            from_request.to_form_body().as_bytes(),
            &request.transaction_unique
        )
        .is_err());

    // A genuine result of one payment cannot complete another.
    let replayed = harness
        .client
        .verify_hosted_response(genuine.to_form_body().as_bytes(), "another-payment");
    assert!(matches!(
        replayed,
        Err(ClientError::UnexpectedTransaction { .. })
    ));
}

#[tokio::test]
async fn an_altered_hosted_request_is_refused_before_the_card_form() {
    let harness = Harness::start().await;
    let site = MerchantSite::start().await;
    let form = harness
        .client
        .hosted_payment_form(&hosted_request(&site, 5000));
    let mut altered = form.fields.clone();
    altered.set("amount", "1");
    let page = harness
        .browser_post(&form.action_url, &form_fields(&altered))
        .await;
    assert_eq!(page.status, 400);
    assert!(!page.has_input("cardNumber"));
    assert!(page.html.contains("65539"), "{}", page.html);

    let mut unsigned = form.fields.clone();
    unsigned.remove(SIGNATURE_FIELD);
    let page = harness
        .browser_post(&form.action_url, &form_fields(&unsigned))
        .await;
    assert_eq!(page.status, 400);
    assert!(!page.has_input("cardNumber"));

    // The untouched form still opens (the secret is the simulator's demo one).
    assert_eq!(SECRET, cardstream::simulator::DEMO_SECRET);
    let page = harness
        .browser_post(&form.action_url, &form_fields(&form.fields))
        .await;
    assert!(page.has_input("cardNumber"));
}

#[tokio::test]
async fn the_hosted_page_runs_three_d_secure_itself() {
    let harness = Harness::start().await;
    let mut site = MerchantSite::start().await;
    let request = hosted_request(&site, 2500);
    let card_form = open_card_form(&harness, &request).await;
    let session = card_form.hidden("session").expect("a session");
    let pay_url = harness.absolute(&card_form.form_action().expect("a form"));

    let challenge = harness
        .browser_post(
            &pay_url,
            &card_entry(&session, "pm_card_authenticationRequired"),
        )
        .await;
    assert!(challenge.html.contains("3-D Secure"), "{}", challenge.html);
    let mut choice = challenge.hidden_inputs();
    choice.push(("outcome".to_string(), "pass".to_string()));
    let finished = harness
        .browser_post(
            &harness.absolute(&challenge.form_action().expect("a form")),
            &choice,
        )
        .await;
    assert_eq!(
        finished.form_action().as_deref(),
        Some(request.redirect_url.as_str())
    );
    let response = harness
        .client
        .verify_hosted_response(&result_body(&finished), &request.transaction_unique)
        .expect("verifies");
    assert_eq!(response.outcome(), Outcome::Approved);
    assert_eq!(response.get("threeDSAuthenticated"), Some("Y"));
    let callback = site.next_post("/callback").await;
    assert!(harness
        .client
        .verify_hosted_response(&callback, &request.transaction_unique)
        .is_ok());
}

//! Webhooks end to end: registered through the client, delivered by the simulator to a real
//! axum receiver on loopback, verified with Griffin's published keys.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use griffin::simulator::{self, Credit, SimulatorConfig, DEFAULT_API_KEY};
use griffin::{
    Client, CreateWebhook, DigestAlgorithm, Event, IncomingWebhook, Money, SignatureEncoding,
    WebhookSignatureError, WebhookState, WebhookVerificationError, WebhookVerifier,
};
use tokio::sync::mpsc;

/// What the receiver got: the target, the headers and the raw body.
struct Received {
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn incoming(&self) -> IncomingWebhook<'_> {
        IncomingWebhook::from_parts("POST", &self.path_and_query, &self.headers, &self.body)
    }

    fn event(&self) -> Event {
        serde_json::from_slice(&self.body).expect("the body is an event")
    }
}

struct Receiver {
    url: String,
    received: mpsc::Receiver<Received>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let (sender, received) = mpsc::channel(64);
        let app = Router::new()
            .route("/hooks/griffin", post(receive))
            .with_state(sender);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}/hooks/griffin", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            received,
            _task: task,
        }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a webhook within 10 s")
            .expect("the receiver is running")
    }

    /// The next delivery of `event_type`, skipping others.
    async fn next_of(&mut self, event_type: &str) -> Received {
        loop {
            let received = self.next().await;
            if received.event().event_type == event_type {
                return received;
            }
        }
    }
}

async fn receive(
    State(sender): State<mpsc::Sender<Received>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let path_and_query = uri
        .path_and_query()
        .map(|target| target.as_str().to_string())
        .unwrap_or_default();
    let _ = sender
        .send(Received {
            path_and_query,
            headers,
            body,
        })
        .await;
    "ok"
}

fn settlement(value: &str, reference: &str) -> Credit {
    Credit {
        amount: Money::from_decimal_str(value).unwrap(),
        reference: reference.to_string(),
        counterparty_name: "ACQUIRER LTD".to_string(),
        counterparty_bank_id: None,
        counterparty_account_number: None,
        booked_at: None,
    }
}

#[tokio::test]
async fn a_booked_credit_is_delivered_signed_and_a_tampered_body_fails() {
    let mut receiver = Receiver::start().await;
    let simulator = simulator::spawn(SimulatorConfig {
        new_webhooks_active: false,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(simulator.client_config(DEFAULT_API_KEY)).unwrap();
    let organization = client.organization().await.unwrap();

    // Register, then activate (the simulator is configured to start webhooks inactive).
    let webhook = client
        .create_webhook(
            &organization,
            &CreateWebhook {
                webhook_destination_url: receiver.url.clone(),
                webhook_description: "Calmony settlements".to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(webhook.webhook_state, WebhookState::Inactive);
    let webhook = client.activate_webhook(&webhook).await.unwrap();
    assert_eq!(webhook.webhook_state, WebhookState::Active);
    assert_eq!(
        client.webhooks(&organization).await.unwrap(),
        vec![webhook.clone()]
    );

    let account = client.bank_accounts(&organization).await.unwrap().remove(0);
    simulator
        .control()
        .credit(
            &account.account_url,
            &settlement("1234.56", "SETTLEMENT 0301"),
        )
        .await
        .unwrap();

    let received = receiver.next_of("transaction-created").await;
    let verifier = WebhookVerifier::new(client.clone());
    let verified = verifier
        .verify(&received.incoming(), Utc::now())
        .await
        .expect("Griffin's signature verifies");
    assert_eq!(verified.kid, "griffin-simulator-1");
    let signature_input = received.headers["signature-input"].to_str().unwrap();
    assert!(
        signature_input.starts_with("griffin-simulator-1=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\" \"content-digest\");created="),
        "{signature_input}"
    );
    let transaction = received
        .event()
        .transaction()
        .expect("a transaction payload");
    assert_eq!(transaction.balance_change, Money::gbp_minor(123_456));
    assert_eq!(transaction.reference.as_deref(), Some("SETTLEMENT 0301"));
    assert_eq!(transaction.account_url, account.account_url);

    // One byte changed in the body: the digest no longer matches.
    let mut tampered = received.body.to_vec();
    let position = tampered
        .windows(7)
        .position(|window| window == b"1234.56")
        .expect("the amount is in the body");
    tampered[position] = b'9';
    let forged = IncomingWebhook::from_parts(
        "POST",
        &received.path_and_query,
        &received.headers,
        &tampered,
    );
    assert!(matches!(
        verifier.verify(&forged, Utc::now()).await,
        Err(WebhookVerificationError::Signature(
            WebhookSignatureError::ContentDigestMismatch
        ))
    ));
    // A body and digest both replaced, under the old signature: the signature fails.
    let mut headers = received.headers.clone();
    headers.insert(
        "content-digest",
        DigestAlgorithm::Sha512
            .content_digest(&tampered)
            .parse()
            .unwrap(),
    );
    let redigested =
        IncomingWebhook::from_parts("POST", &received.path_and_query, &headers, &tampered);
    assert!(matches!(
        verifier.verify(&redigested, Utc::now()).await,
        Err(WebhookVerificationError::Signature(
            WebhookSignatureError::BadSignature
        ))
    ));
    // Replayed after the signature's expiry.
    assert!(matches!(
        verifier
            .verify(
                &received.incoming(),
                Utc::now() + chrono::Duration::minutes(10)
            )
            .await,
        Err(WebhookVerificationError::Signature(
            WebhookSignatureError::Expired { .. }
        ))
    ));

    let deliveries = simulator.control().webhook_deliveries().await.unwrap();
    assert!(deliveries
        .iter()
        .any(|delivery| delivery.event_type == "transaction-created" && delivery.delivered));
}

#[tokio::test]
async fn the_configured_webhook_receives_every_event_in_the_alternative_encodings() {
    let mut receiver = Receiver::start().await;
    let simulator = simulator::spawn(SimulatorConfig {
        webhook_destination_url: Some(receiver.url.clone()),
        webhook_digest: DigestAlgorithm::Sha256,
        webhook_signature_encoding: SignatureEncoding::Der,
        webhook_key_id: "griffin-2025-05-23-1".to_string(),
        opening_balance_minor: 0,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(simulator.client_config(DEFAULT_API_KEY)).unwrap();
    let organization = client.organization().await.unwrap();
    let account = client.bank_accounts(&organization).await.unwrap().remove(0);
    simulator
        .control()
        .credit(&account.account_url, &settlement("0.10", "TEN PENCE"))
        .await
        .unwrap();

    let verifier = WebhookVerifier::new(client.clone());
    let payment = receiver.next().await;
    assert_eq!(payment.event().event_type, "payment-created");
    assert!(payment.headers["content-digest"]
        .to_str()
        .unwrap()
        .starts_with("sha-256=:"));
    let transaction = receiver.next().await;
    assert_eq!(transaction.event().event_type, "transaction-created");
    for received in [&payment, &transaction] {
        let verified = verifier
            .verify(&received.incoming(), Utc::now())
            .await
            .unwrap();
        assert_eq!(verified.kid, "griffin-2025-05-23-1");
    }
    assert_eq!(
        transaction.event().transaction().unwrap().balance_change,
        Money::gbp_minor(10)
    );

    // Griffin's test action sends a test-event and reports the receiver's answer.
    let webhook = client.webhooks(&organization).await.unwrap().remove(0);
    let status = client.send_test_webhook(&webhook).await.unwrap();
    assert_eq!(status.webhook_request_status, "complete");
    assert_eq!(status.webhook_http_status, Some(200));
    let test = receiver.next_of("test-event").await;
    verifier.verify(&test.incoming(), Utc::now()).await.unwrap();
    assert_eq!(client.webhook_test_status(&webhook).await.unwrap(), status);

    // Deactivated: nothing more is sent.
    client.deactivate_webhook(&webhook).await.unwrap();
    simulator
        .control()
        .credit(&account.account_url, &settlement("1.00", "QUIET"))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), receiver.received.recv())
            .await
            .is_err(),
        "an inactive webhook receives nothing"
    );
}

#[tokio::test]
async fn webhook_destinations_follow_the_rules() {
    let simulator = simulator::spawn(SimulatorConfig {
        require_https_webhooks: true,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(simulator.client_config(DEFAULT_API_KEY)).unwrap();
    let organization = client.organization().await.unwrap();
    let refused = client
        .create_webhook(
            &organization,
            &CreateWebhook {
                webhook_destination_url: "http://127.0.0.1:8080/hook".to_string(),
                webhook_description: "plain http".to_string(),
            },
        )
        .await;
    assert!(matches!(refused, Err(griffin::ClientError::Api(problem)) if problem.status == 422));
    let first = client
        .create_webhook(
            &organization,
            &CreateWebhook {
                webhook_destination_url: "https://hooks.example.com/griffin".to_string(),
                webhook_description: "ours".to_string(),
            },
        )
        .await
        .unwrap();
    // One webhook per organisation.
    let second = client
        .create_webhook(
            &organization,
            &CreateWebhook {
                webhook_destination_url: "https://hooks.example.com/other".to_string(),
                webhook_description: "another".to_string(),
            },
        )
        .await;
    assert!(matches!(second, Err(griffin::ClientError::Api(problem)) if problem.status == 409));
    client.delete_webhook(&first).await.unwrap();
    assert!(client.webhooks(&organization).await.unwrap().is_empty());
}

//! Try the simulator in a browser: `cargo run -p cardstream --example hosted_checkout`.
//!
//! Starts the simulator and a one-page "merchant" on loopback. The merchant page posts a
//! signed Hosted form to the simulator's card page; type a test card (4929421234600821 pays,
//! 4000000000000002 is declined, 4000002760003184 asks for 3-D Secure); the browser comes
//! back to the merchant, which verifies the signed result and shows it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use cardstream::simulator::{self, SimulatorConfig, DEMO_SECRET};
use cardstream::{CaptureMode, Client, CustomerDetails, HostedAction, HostedPaymentRequest};
use maud::html;

struct Merchant {
    client: Client,
    base_url: String,
    transaction_unique: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let simulator = simulator::spawn(SimulatorConfig::demo()).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let client = Client::new(simulator.client_config("100001", DEMO_SECRET))
        .map_err(std::io::Error::other)?;
    let merchant = Arc::new(Merchant {
        client,
        base_url: base_url.clone(),
        transaction_unique: format!("example-{}", std::process::id()),
    });
    let router = Router::new()
        .route("/", get(checkout))
        .route("/return", post(returned))
        .with_state(merchant);
    println!("Cardstream simulator on {}", simulator.base_url());
    println!("Merchant checkout on {base_url}/");
    axum::serve(listener, router).await
}

async fn checkout(State(merchant): State<Arc<Merchant>>) -> Html<String> {
    let form = merchant.client.hosted_payment_form(&HostedPaymentRequest {
        action: HostedAction::Sale,
        amount_minor: 1999,
        currency_code: "GBP".to_string(),
        transaction_unique: merchant.transaction_unique.clone(),
        order_ref: Some("Example order".to_string()),
        redirect_url: format!("{}/return", merchant.base_url),
        callback_url: None,
        capture: CaptureMode::Automatic,
        customer: CustomerDetails::default(),
        agreement: None,
    });
    Html(
        html! {
            h1 { "Example shop" }
            form id="checkout" method="post" action=(form.action_url) {
                @for (name, value) in form.fields.iter() {
                    input type="hidden" name=(name) value=(value);
                }
                button id="pay" type="submit" { "Pay 19.99 GBP" }
            }
        }
        .into_string(),
    )
}

async fn returned(State(merchant): State<Arc<Merchant>>, body: Bytes) -> Html<String> {
    let verdict = match merchant
        .client
        .verify_hosted_response(&body, &merchant.transaction_unique)
    {
        Ok(response) => format!(
            "verified: responseCode {} ({}), state {}, outcome {:?}",
            response.response_code(),
            response.message(),
            response.state().map(|state| state.as_str()).unwrap_or("?"),
            response.outcome()
        ),
        Err(error) => format!("refused: {error}"),
    };
    Html(html! { h1 { "Payment result" } p id="verdict" { (verdict) } }.into_string())
}

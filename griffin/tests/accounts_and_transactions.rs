//! The client against the simulator over real HTTP: keys, navigation, balances, booking
//! settlements through the control endpoint, and reading them back page by page.

use chrono::{DateTime, Duration, TimeZone, Utc};
use griffin::simulator::{
    self, Credit, RunningSimulator, SimulatedAccount, SimulatorConfig, DEFAULT_API_KEY,
};
use griffin::{
    ApiKey, BalanceChangeDirection, BankAccount, BankProductType, Client, ClientError, Config,
    ErrorShape, Money, PaymentDirection, TransactionOriginType, TransactionQuery, TransactionSort,
};

async fn start(config: SimulatorConfig) -> (RunningSimulator, Client) {
    let simulator = simulator::spawn(config)
        .await
        .expect("the simulator binds a loopback port");
    let client = Client::new(simulator.client_config(DEFAULT_API_KEY)).expect("a valid config");
    (simulator, client)
}

fn without_opening_balance() -> SimulatorConfig {
    SimulatorConfig {
        opening_balance_minor: 0,
        ..SimulatorConfig::default()
    }
}

fn credit(value: &str, reference: &str) -> Credit {
    Credit {
        amount: Money::from_decimal_str(value).unwrap(),
        reference: reference.to_string(),
        counterparty_name: "WORLDPAY ACQUIRING".to_string(),
        counterparty_bank_id: Some("309634".to_string()),
        counterparty_account_number: Some("12345678".to_string()),
        booked_at: None,
    }
}

async fn settlement_account(client: &Client) -> BankAccount {
    let organization = client.organization().await.unwrap();
    client
        .bank_accounts(&organization)
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("the simulator opens one account")
}

#[tokio::test]
async fn a_wrong_or_missing_api_key_is_refused_with_401() {
    let (simulator, _client) = start(SimulatorConfig::default()).await;
    let wrong = Client::new(Config::new(
        simulator.base_url(),
        ApiKey::new("g-test-not-a-key"),
    ))
    .unwrap();
    match wrong.organization().await {
        Err(ClientError::Unauthorized(problem)) => {
            assert_eq!(problem.status, 401);
            assert_eq!(problem.detail(), Some("Requires an API key to continue"));
        }
        other => panic!("expected 401, got {other:?}"),
    }

    // No header, and Basic auth (which Griffin does not support), are both 401.
    let http = reqwest::Client::new();
    let url = format!("{}/v0/index", simulator.base_url());
    let bare = http.get(&url).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "GriffinSession");
    let basic = http
        .get(&url)
        .basic_auth(DEFAULT_API_KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let right = http
        .get(&url)
        .header("Authorization", format!("GriffinAPIKey {DEFAULT_API_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
}

#[tokio::test]
async fn navigation_lists_accounts_with_their_balances() {
    let (_simulator, client) = start(SimulatorConfig {
        accounts: vec![
            SimulatedAccount {
                display_name: "Card settlements".to_string(),
                bank_product_type: BankProductType::OperationalAccount,
            },
            SimulatedAccount {
                display_name: "Safeguarding".to_string(),
                bank_product_type: BankProductType::SafeguardingAccount,
            },
        ],
        ..SimulatorConfig::default()
    })
    .await;
    let organization = client.organization().await.unwrap();
    assert_eq!(
        organization.organization_mode,
        griffin::OrganizationMode::TestMode
    );
    let accounts = client.bank_accounts(&organization).await.unwrap();
    assert_eq!(accounts.len(), 2);
    // Newest first, Griffin's default order.
    assert_eq!(accounts[0].display_name, "Safeguarding");
    assert_eq!(accounts[1].display_name, "Card settlements");
    for account in &accounts {
        // The sandbox credits £1,000 of test money to each new account.
        assert_eq!(account.account_balance, Money::gbp_minor(100_000));
        assert_eq!(account.available_balance, Money::gbp_minor(100_000));
        let address = &account.bank_addresses[0];
        assert_eq!(address.bank_id_code, "gbdsc");
        assert_eq!(address.account_number.len(), 8);
        assert!(account.account_url.starts_with("/v0/bank/accounts/ba."));
        assert_eq!(
            &client.bank_account(&account.account_url).await.unwrap(),
            account
        );
    }
    let opening = client
        .transactions(&accounts[0], &TransactionQuery::default())
        .await
        .unwrap();
    assert_eq!(opening.len(), 1);
    assert_eq!(
        opening[0].transaction_origin_type,
        TransactionOriginType::Deposit
    );
    assert_eq!(opening[0].account_balance, Money::gbp_minor(100_000));
}

#[tokio::test]
async fn navigation_goes_through_the_api_key_when_the_index_has_no_organization_url() {
    let (_simulator, client) = start(SimulatorConfig {
        index_includes_organization_url: false,
        ..SimulatorConfig::default()
    })
    .await;
    let index = client.index().await.unwrap();
    assert!(index.organization_url.is_none());
    let organization = client.organization().await.unwrap();
    assert_eq!(client.bank_accounts(&organization).await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_hundred_and_twenty_credits_page_through_exactly_once_in_order() {
    let (simulator, client) = start(without_opening_balance()).await;
    let account = settlement_account(&client).await;
    let control = simulator.control();
    for number in 0..120 {
        control
            .credit(
                &account.account_url,
                &credit("1.00", &format!("SETTLE-{number:03}")),
            )
            .await
            .unwrap();
    }

    // Griffin's default: 25 a page, newest first; follow links.next until it is null.
    let mut page = client
        .transactions_page(&account, &TransactionQuery::default())
        .await
        .unwrap();
    assert!(page.links.prev.is_none());
    let mut pages = vec![page.items.len()];
    let mut seen: Vec<String> = page
        .items
        .iter()
        .filter_map(|t| t.reference.clone())
        .collect();
    let mut last = page.clone();
    while let Some(next) = client.next_page(&page).await.unwrap() {
        assert!(next.links.prev.is_some(), "a later page links back");
        pages.push(next.items.len());
        seen.extend(next.items.iter().filter_map(|t| t.reference.clone()));
        last = next.clone();
        page = next;
    }
    assert_eq!(pages, vec![25, 25, 25, 25, 20]);
    let newest_first: Vec<String> = (0..120).rev().map(|n| format!("SETTLE-{n:03}")).collect();
    assert_eq!(seen, newest_first);

    // The last page's prev link leads back to the fourth page.
    let back = client
        .page::<griffin::AccountTransaction>(last.links.prev.as_deref().unwrap())
        .await
        .unwrap();
    let fourth: Vec<String> = back
        .items
        .iter()
        .filter_map(|t| t.reference.clone())
        .collect();
    assert_eq!(fourth, newest_first[75..100].to_vec());

    // Oldest first, 50 a page: links carry sort and page size.
    let query = TransactionQuery {
        page_size: Some(50),
        sort: Some(TransactionSort::CreatedAtAscending),
        ..TransactionQuery::default()
    };
    let first = client.transactions_page(&account, &query).await.unwrap();
    let next = first.links.next.as_deref().unwrap();
    assert!(
        next.contains("page[size]=50") && next.contains("sort=created-at"),
        "{next}"
    );
    assert!(next.contains("page[after]="), "{next}");
    let oldest_first: Vec<String> = client
        .transactions(&account, &query)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.reference)
        .collect();
    let expected: Vec<String> = (0..120).map(|n| format!("SETTLE-{n:03}")).collect();
    assert_eq!(oldest_first, expected);

    // The running balance of the newest line is the account's balance.
    let account = client.bank_account(&account.account_url).await.unwrap();
    assert_eq!(account.account_balance, Money::gbp_minor(12_000));
    let posted = control.credits().await.unwrap();
    assert_eq!(posted.len(), 120);
    assert_eq!(posted[0].credit.reference, "SETTLE-000");
}

#[tokio::test]
async fn amounts_round_trip_exactly() {
    let (simulator, client) = start(without_opening_balance()).await;
    let account = settlement_account(&client).await;
    let control = simulator.control();
    let values = ["0.10", "1234.56", "0.01", "999999999999.99", "20"];
    let mut expected_balance = 0i64;
    for (number, value) in values.iter().enumerate() {
        let booked = control
            .credit(
                &account.account_url,
                &credit(value, &format!("AMOUNT-{number}")),
            )
            .await
            .unwrap();
        let minor = Money::from_decimal_str(value).unwrap().amount_minor;
        expected_balance += minor;
        assert_eq!(booked.balance_change.amount_minor, minor);
        assert_eq!(booked.account_balance.amount_minor, expected_balance);
        assert_eq!(
            booked.balance_change_direction,
            BalanceChangeDirection::Credit
        );
        assert_eq!(booked.signed_amount_minor(), minor);
    }
    let listed = client
        .transactions(
            &account,
            &TransactionQuery {
                sort: Some(TransactionSort::CreatedAtAscending),
                ..TransactionQuery::default()
            },
        )
        .await
        .unwrap();
    let minors: Vec<i64> = listed
        .iter()
        .map(|t| t.balance_change.amount_minor)
        .collect();
    assert_eq!(minors, vec![10, 123_456, 1, 99_999_999_999_999, 2_000]);
    assert_eq!(
        client
            .bank_account(&account.account_url)
            .await
            .unwrap()
            .account_balance,
        Money::gbp_minor(expected_balance)
    );

    // On the wire: decimal strings with two places.
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}{}",
            simulator.base_url(),
            listed[0].account_transaction_url
        ))
        .header("Authorization", format!("GriffinAPIKey {DEFAULT_API_KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw["balance-change"],
        serde_json::json!({"currency": "GBP", "value": "0.10"})
    );
    let fifth = client
        .transaction(&listed[4].account_transaction_url)
        .await
        .unwrap();
    assert_eq!(fifth.balance_change.to_decimal_string(), "20.00");
    assert_eq!(
        fifth.account_balance.to_decimal_string(),
        "1000000001254.66"
    );
}

#[tokio::test]
async fn processed_at_filters_and_sort_select_a_settlement_window() {
    let (simulator, client) = start(without_opening_balance()).await;
    let account = settlement_account(&client).await;
    let control = simulator.control();
    let day = |d: u32| -> DateTime<Utc> { Utc.with_ymd_and_hms(2025, 3, d, 9, 0, 0).unwrap() };
    // Booked out of order: processed-at is the bank's booking time, not ours.
    for d in [5u32, 2, 4, 1, 3] {
        let mut settlement = credit("10.00", &format!("DAY-{d}"));
        settlement.booked_at = Some(day(d));
        control
            .credit(&account.account_url, &settlement)
            .await
            .unwrap();
    }
    let window = client
        .transactions(
            &account,
            &TransactionQuery {
                page_size: Some(1),
                sort: Some(TransactionSort::ProcessedAtAscending),
                processed_at_or_after: Some(day(2)),
                processed_before: Some(day(4)),
                ..TransactionQuery::default()
            },
        )
        .await
        .unwrap();
    let references: Vec<String> = window.into_iter().filter_map(|t| t.reference).collect();
    assert_eq!(references, vec!["DAY-2", "DAY-3"]);
    let after = client
        .transactions(
            &account,
            &TransactionQuery {
                sort: Some(TransactionSort::ProcessedAtDescending),
                processed_after: Some(day(3)),
                processed_at_or_before: Some(day(5)),
                ..TransactionQuery::default()
            },
        )
        .await
        .unwrap();
    let references: Vec<String> = after.into_iter().filter_map(|t| t.reference).collect();
    assert_eq!(references, vec!["DAY-5", "DAY-4"]);
}

#[tokio::test]
async fn the_payment_behind_a_credit_names_the_payer_and_reference() {
    let (simulator, client) = start(without_opening_balance()).await;
    let account = settlement_account(&client).await;
    let booked = simulator
        .control()
        .credit(&account.account_url, &credit("123.45", "CS 2025-03-01 B17"))
        .await
        .unwrap();
    assert_eq!(
        booked.transaction_origin_type,
        TransactionOriginType::Payment
    );
    assert_eq!(booked.reference.as_deref(), Some("CS 2025-03-01 B17"));
    let payment = client
        .payment(
            booked
                .payment_url
                .as_deref()
                .expect("a credit has a payment"),
        )
        .await
        .unwrap();
    assert_eq!(payment.payment_direction, PaymentDirection::InboundPayment);
    assert_eq!(payment.payment_amount, Money::gbp_minor(12_345));
    assert_eq!(
        payment.payment_reference.as_deref(),
        Some("CS 2025-03-01 B17")
    );
    let debtor = payment.debtor.unwrap();
    assert_eq!(debtor.account_holder.as_deref(), Some("WORLDPAY ACQUIRING"));
    assert_eq!(debtor.bank_id.as_deref(), Some("309634"));
    assert_eq!(debtor.account_number.as_deref(), Some("12345678"));
}

#[tokio::test]
async fn events_backfill_finds_transaction_created_by_type() {
    let (simulator, client) = start(without_opening_balance()).await;
    let account = settlement_account(&client).await;
    let since = Utc::now() - Duration::seconds(5);
    for number in 0..3 {
        simulator
            .control()
            .credit(
                &account.account_url,
                &credit("5.00", &format!("EV-{number}")),
            )
            .await
            .unwrap();
    }
    let organization = client.organization().await.unwrap();
    let page = client
        .events_page(
            &organization,
            &griffin::EventQuery {
                page_size: Some(2),
                event_type: Some("transaction-created".to_string()),
                created_at_or_after: Some(since),
            },
        )
        .await
        .unwrap();
    let next = page.links.next.clone().expect("three events, two a page");
    assert!(
        next.contains("filter[event-type][eq]=transaction-created"),
        "{next}"
    );
    let mut events = page.items.clone();
    events.extend(client.next_page(&page).await.unwrap().unwrap().items);
    let references: Vec<String> = events
        .iter()
        .filter_map(|event| event.transaction())
        .filter_map(|transaction| transaction.reference)
        .collect();
    assert_eq!(references, vec!["EV-2", "EV-1", "EV-0"]);
    let again = client.event(&events[0].event_url).await.unwrap();
    assert_eq!(again, events[0]);
}

#[tokio::test]
async fn bad_requests_are_problems_in_either_error_shape() {
    for shape in [ErrorShape::JsonApi, ErrorShape::Flat] {
        let (simulator, client) = start(SimulatorConfig {
            error_shape: shape,
            ..SimulatorConfig::default()
        })
        .await;
        let account = settlement_account(&client).await;
        let link = format!("{}?page[size]=500", account.account_transactions_url);
        match client.page::<griffin::AccountTransaction>(&link).await {
            Err(ClientError::Api(problem)) => {
                assert_eq!(problem.status, 400);
                assert!(
                    problem.detail().unwrap().contains("page[size]"),
                    "{problem:?}"
                );
                assert_eq!(
                    problem.errors[0]
                        .source
                        .as_ref()
                        .unwrap()
                        .parameter
                        .as_deref(),
                    Some("page[size]")
                );
            }
            other => panic!("expected a 400, got {other:?}"),
        }
        match client.bank_account("/v0/bank/accounts/ba.nothing").await {
            Err(ClientError::NotFound(problem)) => assert_eq!(problem.status, 404),
            other => panic!("expected a 404, got {other:?}"),
        }
        // A link off the origin is never followed with our key.
        assert!(matches!(
            client
                .bank_account("https://example.com/v0/bank/accounts/ba.x")
                .await,
            Err(ClientError::ForeignLink(_))
        ));
        // The control endpoint refuses what Griffin could not book.
        let refused = simulator
            .control()
            .credit(&account.account_url, &credit("0.00", "ZERO"))
            .await;
        assert!(matches!(refused, Err(ClientError::Api(problem)) if problem.status == 422));
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = Config::new(format!("http://{address}"), ApiKey::new(DEFAULT_API_KEY));
    config.timeouts.request_timeout_ms = 200;
    let client = Client::new(config).unwrap();
    let error = client.index().await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout(_)), "{error:?}");
    assert!(error.is_retryable());
    hold.abort();
}

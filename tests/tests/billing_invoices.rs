//! Invoices end to end: the real server process on a fresh database, driven over HTTP as
//! the Stripe SDKs drive it — manual invoices with invoice items and taxes, numbering
//! (also under concurrent finalizations), payment with approving and declining cards, the
//! state machine's transitions and refusals, the hosted page and its PDF, receipt invoices
//! of one-off payments, Stripe events, and project isolation.

use calmony_tests::{run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("DELETE");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST that must succeed; the object answered.
    async fn ok(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.post(path, form).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }
}

/// A new project with a test key and invoice prefix `prefix`: (project id, secret key).
fn new_project(database_url: &str, name: &str, prefix: &str) -> (String, String) {
    let output = run(database_url, &["projects", "create", "--name", name]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--invoice-prefix",
            prefix,
            "--seller-name",
            "Acme Widgets Ltd",
            "--brand-color",
            "#AA3300",
        ],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    (project, stdout_of(&output).trim().to_string())
}

fn api(server: &Server, key: &str) -> Api {
    Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key: key.to_string(),
    }
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

/// A customer with `name` and a card attached (`test_card`, e.g. `pm_card_visa`): (customer,
/// payment method).
async fn customer_with_card(api: &Api, name: &str, test_card: &str) -> (String, String) {
    let customer = api.ok("/v1/customers", &[("name", name)]).await;
    let method = api
        .ok(
            &format!("/v1/payment_methods/{test_card}/attach"),
            &[("customer", &id(&customer))],
        )
        .await;
    (id(&customer), id(&method))
}

/// A draft invoice for `customer` with one £10.00 item.
async fn draft_with_item(api: &Api, customer: &str) -> String {
    let invoice = api
        .ok(
            "/v1/invoices",
            &[("customer", customer), ("currency", "gbp")],
        )
        .await;
    api.ok(
        "/v1/invoiceitems",
        &[
            ("customer", customer),
            ("invoice", &id(&invoice)),
            ("amount", "1000"),
            ("currency", "gbp"),
            ("description", "Widget"),
        ],
    )
    .await;
    id(&invoice)
}

fn assert_invalid_request(status: StatusCode, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

#[tokio::test]
async fn a_manual_invoice_is_numbered_taxed_paid_and_served_as_a_page_and_a_pdf() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Invoicing", "ACME");
    let (_, other_key) = new_project(&db.url, "Elsewhere", "ELSE");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = api(&server, &key);

    let exclusive = api
        .ok(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20"),
                ("inclusive", "false"),
            ],
        )
        .await;
    let inclusive = api
        .ok(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20"),
                ("inclusive", "true"),
            ],
        )
        .await;
    let hostile_name = "<script>alert('x')</script> & Co";
    let (customer, visa) = customer_with_card(&api, hostile_name, "pm_card_visa").await;
    let declining_card = api
        .ok(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", &customer)],
        )
        .await;

    // A draft with two items: £10.00 plus 20% VAT, and £12.00 with 20% VAT inside it.
    let draft = api
        .ok(
            "/v1/invoices",
            &[
                ("customer", &customer),
                ("currency", "gbp"),
                ("description", "March"),
                ("metadata[order]", "42"),
            ],
        )
        .await;
    let invoice_id = id(&draft);
    assert!(invoice_id.starts_with("in_"), "{draft}");
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["number"], Value::Null);
    assert_eq!(draft["hosted_invoice_url"], Value::Null);
    assert_eq!(draft["invoice_pdf"], Value::Null);
    assert_eq!(draft["collection_method"], "charge_automatically");
    assert_eq!(draft["auto_advance"], false);
    assert_eq!(draft["parent"], Value::Null);
    let first_item = api
        .ok(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("invoice", &invoice_id),
                ("amount", "1000"),
                ("currency", "gbp"),
                ("description", "Consulting"),
                ("tax_rates[]", &id(&exclusive)),
            ],
        )
        .await;
    assert!(id(&first_item).starts_with("ii_"), "{first_item}");
    assert_eq!(first_item["object"], "invoiceitem");
    assert_eq!(first_item["invoice"], invoice_id.as_str());
    api.ok(
        "/v1/invoiceitems",
        &[
            ("customer", &customer),
            ("invoice", &invoice_id),
            ("amount", "1200"),
            ("currency", "gbp"),
            ("description", "Support"),
            ("tax_rates[]", &id(&inclusive)),
        ],
    )
    .await;
    let updated = api
        .ok(
            &format!("/v1/invoices/{invoice_id}"),
            &[("footer", "Thank you")],
        )
        .await;
    assert_eq!(updated["footer"], "Thank you");

    let open = api
        .ok(&format!("/v1/invoices/{invoice_id}/finalize"), &[])
        .await;
    assert_eq!(open["status"], "open", "{open}");
    assert_eq!(open["number"], "ACME-0001");
    assert_eq!(open["subtotal"], 2200);
    assert_eq!(open["subtotal_excluding_tax"], 2000);
    assert_eq!(open["total"], 2400);
    assert_eq!(open["total_excluding_tax"], 2000);
    assert_eq!(open["amount_due"], 2400);
    assert_eq!(open["amount_paid"], 0);
    assert_eq!(open["amount_remaining"], 2400);
    assert_eq!(open["metadata"]["order"], "42");
    let taxes = open["total_taxes"].as_array().expect("total_taxes");
    assert_eq!(taxes.len(), 2, "{open}");
    assert_eq!(taxes[0]["amount"], 200);
    assert_eq!(taxes[0]["tax_behavior"], "exclusive");
    assert_eq!(taxes[0]["taxable_amount"], 1000);
    assert_eq!(
        taxes[0]["tax_rate_details"]["tax_rate"],
        id(&exclusive).as_str()
    );
    assert_eq!(taxes[0]["type"], "tax_rate_details");
    assert_eq!(taxes[1]["amount"], 200);
    assert_eq!(taxes[1]["tax_behavior"], "inclusive");
    assert_eq!(taxes[1]["taxable_amount"], 1000);
    let lines = open["lines"]["data"].as_array().expect("lines");
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["id"].as_str().unwrap().starts_with("il_"));
    assert_eq!(lines[0]["object"], "line_item");
    assert_eq!(lines[0]["amount"], 1000);
    assert_eq!(lines[0]["parent"]["type"], "invoice_item_details");
    assert_eq!(
        lines[0]["parent"]["invoice_item_details"]["invoice_item"],
        id(&first_item).as_str()
    );
    assert_eq!(lines[0]["taxes"][0]["amount"], 200);
    assert_eq!(lines[0]["pricing"]["unit_amount_decimal"], Value::Null);
    let (status, page_of_lines) = api
        .get(&format!("/v1/invoices/{invoice_id}/lines?limit=1"))
        .await;
    assert_eq!(status, 200, "{page_of_lines}");
    assert_eq!(page_of_lines["data"].as_array().unwrap().len(), 1);
    assert_eq!(page_of_lines["has_more"], true);
    let hosted_url = open["hosted_invoice_url"].as_str().expect("hosted url");
    let pdf_url = open["invoice_pdf"].as_str().expect("pdf url");
    assert!(hosted_url.starts_with(&server.base_url), "{hosted_url}");
    assert_eq!(pdf_url, format!("{hosted_url}/pdf"));

    // Finalized invoices are not drafts any more.
    let (status, body) = api
        .post(&format!("/v1/invoices/{invoice_id}"), &[("footer", "x")])
        .await;
    assert_invalid_request(status, &body);
    let (status, body) = api.delete(&format!("/v1/invoices/{invoice_id}")).await;
    assert_invalid_request(status, &body);

    // The hosted page: the number, escaped customer name, a PDF link; unknown tokens 404.
    let client = reqwest::Client::new();
    let page = client.get(hosted_url).send().await.expect("hosted page");
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("content-security-policy").is_some());
    let html = page.text().await.unwrap();
    assert!(html.contains("ACME-0001"), "{html}");
    assert!(html.contains("Acme Widgets Ltd"), "{html}");
    assert!(
        !html.contains("<script>alert"),
        "the name is escaped: {html}"
    );
    assert!(html.contains("&lt;script&gt;alert"), "{html}");
    assert!(html.contains("Download PDF"), "{html}");
    assert!(html.contains("£24.00"), "{html}");
    let missing = client
        .get(format!("{}/invoices/invtok_nope", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The PDF.
    let pdf = client.get(pdf_url).send().await.expect("pdf");
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert_eq!(pdf.headers()["cache-control"], "no-store");
    assert_eq!(
        pdf.headers()["content-disposition"],
        "inline; filename=\"ACME-0001.pdf\""
    );
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF"));
    let text = pdf_extract::extract_text_from_mem(&bytes).expect("pdf text");
    assert!(text.contains("ACME-0001"), "{text}");
    assert!(text.contains("24.00"), "{text}");

    // A declined card: 402, and the invoice stays open.
    let (status, declined) = api
        .post(
            &format!("/v1/invoices/{invoice_id}/pay"),
            &[("payment_method", &id(&declining_card))],
        )
        .await;
    assert_eq!(status, 402, "{declined}");
    assert_eq!(declined["error"]["type"], "card_error");
    let (_, still_open) = api.get(&format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(still_open["status"], "open", "{still_open}");
    assert_eq!(still_open["attempted"], true);
    assert_eq!(still_open["amount_paid"], 0);

    // Paid with the Visa card.
    let paid = api
        .ok(
            &format!("/v1/invoices/{invoice_id}/pay"),
            &[("payment_method", &visa)],
        )
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["paid"], true);
    assert_eq!(paid["amount_paid"], 2400);
    assert_eq!(paid["amount_remaining"], 0);
    assert!(paid["status_transitions"]["paid_at"].is_i64());
    let payment = &paid["payments"]["data"][0];
    assert_eq!(payment["object"], "invoice_payment", "{paid}");
    assert!(payment["id"].as_str().unwrap().starts_with("inpay_"));
    assert_eq!(payment["status"], "paid");
    assert_eq!(payment["amount_paid"], 2400);
    assert_eq!(payment["is_default"], true);
    assert_eq!(payment["payment"]["type"], "payment_intent");
    let intent_id = payment["payment"]["payment_intent"].as_str().unwrap();
    let (_, intent) = api.get(&format!("/v1/payment_intents/{intent_id}")).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(intent["amount"], 2400);
    let (_, expanded) = api
        .get(&format!(
            "/v1/invoices/{invoice_id}?expand[]=customer&expand[]=payments.data.payment.payment_intent"
        ))
        .await;
    assert_eq!(expanded["customer"]["name"], hostile_name, "{expanded}");
    assert_eq!(
        expanded["payments"]["data"][0]["payment"]["payment_intent"]["status"],
        "succeeded"
    );
    let (status, body) = api
        .post(&format!("/v1/invoices/{invoice_id}/void"), &[])
        .await;
    assert_invalid_request(status, &body);

    // The next number; void and uncollectible transitions and their refusals.
    let second = draft_with_item(&api, &customer).await;
    let second_open = api
        .ok(&format!("/v1/invoices/{second}/finalize"), &[])
        .await;
    assert_eq!(second_open["number"], "ACME-0002");
    let voided = api.ok(&format!("/v1/invoices/{second}/void"), &[]).await;
    assert_eq!(voided["status"], "void");
    assert_eq!(voided["amount_remaining"], 0);
    assert!(voided["status_transitions"]["voided_at"].is_i64());
    let (status, body) = api
        .post(&format!("/v1/invoices/{second}/mark_uncollectible"), &[])
        .await;
    assert_invalid_request(status, &body);
    let (status, body) = api
        .post(
            &format!("/v1/invoices/{second}/pay"),
            &[("payment_method", &visa)],
        )
        .await;
    assert_invalid_request(status, &body);

    let third = draft_with_item(&api, &customer).await;
    let (status, body) = api
        .post(&format!("/v1/invoices/{third}/mark_uncollectible"), &[])
        .await;
    assert_invalid_request(status, &body);
    api.ok(&format!("/v1/invoices/{third}/finalize"), &[]).await;
    let uncollectible = api
        .ok(&format!("/v1/invoices/{third}/mark_uncollectible"), &[])
        .await;
    assert_eq!(uncollectible["status"], "uncollectible");
    assert!(uncollectible["status_transitions"]["marked_uncollectible_at"].is_i64());
    let voided_later = api.ok(&format!("/v1/invoices/{third}/void"), &[]).await;
    assert_eq!(voided_later["status"], "void");

    // A draft may be deleted; then it is gone (and its number was never issued).
    let fourth = draft_with_item(&api, &customer).await;
    let (status, deleted) = api.delete(&format!("/v1/invoices/{fourth}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let fifth = draft_with_item(&api, &customer).await;
    let fifth_open = api.ok(&format!("/v1/invoices/{fifth}/finalize"), &[]).await;
    assert_eq!(fifth_open["number"], "ACME-0004");

    // Lists and filters.
    let (status, listed) = api
        .get(&format!("/v1/invoices?customer={customer}&status=void"))
        .await;
    assert_eq!(status, 200, "{listed}");
    let void_ids: std::collections::BTreeSet<String> =
        listed["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(
        void_ids,
        [second.clone(), third.clone()].into_iter().collect()
    );
    let (_, paid_list) = api.get("/v1/invoices?status=paid").await;
    assert_eq!(
        paid_list["data"].as_array().unwrap().len(),
        1,
        "{paid_list}"
    );
    let (status, body) = api.get("/v1/invoices?status=nonsense").await;
    assert_invalid_request(status, &body);

    // Pending invoice items go onto a new invoice with `include`; deleted ones do not.
    let pending = api
        .ok(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("amount", "500"),
                ("currency", "gbp"),
            ],
        )
        .await;
    assert_eq!(pending["invoice"], Value::Null);
    let dropped = api
        .ok(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("amount", "700"),
                ("currency", "gbp"),
            ],
        )
        .await;
    let (status, gone) = api
        .delete(&format!("/v1/invoiceitems/{}", id(&dropped)))
        .await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["deleted"], true);
    let (_, pending_list) = api
        .get(&format!(
            "/v1/invoiceitems?customer={customer}&pending=true"
        ))
        .await;
    assert_eq!(
        pending_list["data"].as_array().unwrap().len(),
        1,
        "{pending_list}"
    );
    let gathered = api
        .ok(
            "/v1/invoices",
            &[
                ("customer", &customer),
                ("pending_invoice_items_behavior", "include"),
            ],
        )
        .await;
    assert_eq!(gathered["subtotal"], 500, "{gathered}");
    let (_, item_now) = api.get(&format!("/v1/invoiceitems/{}", id(&pending))).await;
    assert_eq!(item_now["invoice"], id(&gathered).as_str());

    // Stripe events.
    let (_, finalized) = api.get("/v1/events?type=invoice.finalized").await;
    assert!(
        finalized["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["data"]["object"]["id"] == invoice_id.as_str()),
        "{finalized}"
    );
    let (_, paid_events) = api.get("/v1/events?type=invoice.paid").await;
    assert!(
        paid_events["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["data"]["object"]["status"] == "paid"),
        "{paid_events}"
    );
    let (_, succeeded) = api.get("/v1/events?type=invoice.payment_succeeded").await;
    assert_eq!(
        succeeded["data"].as_array().unwrap().len(),
        1,
        "{succeeded}"
    );
    let (_, failed) = api.get("/v1/events?type=invoice.payment_failed").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1, "{failed}");
    let (_, created) = api.get("/v1/events?type=invoiceitem.created").await;
    assert_eq!(created["data"].as_array().unwrap().len(), 8, "{created}");

    // Another project sees none of it.
    let stranger = Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key: other_key,
    };
    let (status, body) = stranger.get(&format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = stranger
        .post(&format!("/v1/invoices/{fifth}/void"), &[])
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = stranger
        .get(&format!("/v1/invoiceitems/{}", id(&pending)))
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, none) = stranger.get("/v1/invoices").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0, "{none}");
}

#[tokio::test]
async fn concurrent_finalizations_get_every_number_once_without_gaps() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Busy", "BUSY");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = std::sync::Arc::new(api(&server, &key));
    let customer = id(&api.ok("/v1/customers", &[("name", "Many")]).await);
    let mut drafts = Vec::new();
    for _ in 0..20 {
        drafts.push(draft_with_item(&api, &customer).await);
    }
    let finalizations: Vec<_> = drafts
        .iter()
        .map(|draft| {
            let api = api.clone();
            let path = format!("/v1/invoices/{draft}/finalize");
            tokio::spawn(async move { api.post(&path, &[]).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for finalization in finalizations {
        let (status, invoice) = finalization.await.expect("join");
        assert_eq!(status, 200, "{invoice}");
        numbers.push(invoice["number"].as_str().expect("number").to_string());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=20).map(|n| format!("BUSY-{n:04}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn a_one_off_payment_gets_a_paid_invoice_for_its_customer() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Shop", "SHOP");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = api(&server, &key);
    let (customer, visa) = customer_with_card(&api, "Buyer", "pm_card_visa").await;
    let intent = api
        .ok(
            "/v1/payment_intents",
            &[
                ("amount", "1999"),
                ("currency", "gbp"),
                ("customer", &customer),
                ("payment_method", &visa),
                ("confirm", "true"),
                ("description", "Blue teapot"),
            ],
        )
        .await;
    assert_eq!(intent["status"], "succeeded", "{intent}");

    // The receipt invoice is issued just after the payment, off its path (the billing
    // runner's receipts, within a second or so); the read model follows.
    let mut listed = Value::Null;
    for _ in 0..150 {
        let (status, body) = api.get(&format!("/v1/invoices?customer={customer}")).await;
        assert_eq!(status, 200, "{body}");
        if !body["data"].as_array().unwrap().is_empty() {
            listed = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let invoices = listed["data"].as_array().expect("a receipt invoice");
    assert_eq!(invoices.len(), 1, "{listed}");
    let invoice = &invoices[0];
    assert_eq!(invoice["status"], "paid", "{invoice}");
    assert_eq!(invoice["customer"], customer.as_str());
    assert_eq!(invoice["amount_paid"], 1999);
    assert_eq!(invoice["total"], 1999);
    assert_eq!(invoice["number"], "SHOP-0001");
    assert_eq!(invoice["billing_reason"], "manual");
    assert_eq!(invoice["lines"]["data"][0]["description"], "Blue teapot");
    assert_eq!(
        invoice["payments"]["data"][0]["payment"]["payment_intent"],
        id(&intent).as_str()
    );
    let (_, paid) = api.get("/v1/events?type=invoice.paid").await;
    assert_eq!(paid["data"].as_array().unwrap().len(), 1, "{paid}");
}

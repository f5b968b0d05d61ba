//! Renders invoices and reads them back with a PDF text extractor, as a reader would.

use invoice_pdf::{
    format_money, render, DocumentLine, DocumentStatus, DocumentTax, InvoiceDocument, Party,
};

/// 2026-11-01T00:00:00Z.
const NOVEMBER_1_2026: i64 = 1_793_491_200;
const DAY_SECONDS: i64 = 86_400;

fn party(name: &str) -> Party {
    Party {
        name: name.to_owned(),
        address_lines: vec!["1 High Street".to_owned(), "Bristol BS1 4DJ".to_owned()],
        email: Some("accounts@example.com".to_owned()),
        tax_id: Some("GB123456789".to_owned()),
    }
}

fn line(description: &str, quantity: i64, unit_amount: i64) -> DocumentLine {
    DocumentLine {
        description: description.to_owned(),
        quantity,
        unit_amount: Some(unit_amount),
        amount: quantity * unit_amount,
        period: Some((NOVEMBER_1_2026, NOVEMBER_1_2026 + 30 * DAY_SECONDS)),
    }
}

/// A paid invoice for five lines with VAT included.
fn paid_invoice() -> InvoiceDocument {
    let lines = vec![
        line("Growth plan (monthly)", 1, 4_900),
        line("Additional seats", 12, 800),
        line("Card payments processed", 3_214, 31),
        line("Dedicated webhook relay", 1, 2_500),
        line("Onboarding workshop", 1, 45_000),
    ];
    let subtotal = lines.iter().map(|line| line.amount).sum();
    InvoiceDocument {
        seller: party("Calmony Pay Ltd"),
        brand_color: None,
        customer: party("Harbourside Bakery"),
        number: Some("CALM-2026-0042".to_owned()),
        status: DocumentStatus::Paid,
        currency: "gbp".to_owned(),
        issued_at: NOVEMBER_1_2026 + 24 * DAY_SECONDS,
        due_at: Some(NOVEMBER_1_2026 + 38 * DAY_SECONDS),
        paid_at: Some(NOVEMBER_1_2026 + 25 * DAY_SECONDS),
        lines,
        subtotal,
        taxes: vec![DocumentTax {
            label: "VAT 20% (inclusive)".to_owned(),
            amount: subtotal / 6,
        }],
        total: subtotal,
        amount_paid: subtotal,
        amount_remaining: 0,
        footer: Some("Thank you for your business.".to_owned()),
    }
}

fn text_of(pdf: &[u8]) -> String {
    match pdf_extract::extract_text_from_mem(pdf) {
        Ok(text) => text,
        Err(error) => panic!("the rendered PDF does not read back: {error}"),
    }
}

fn pages_of(pdf: &[u8]) -> Vec<String> {
    match pdf_extract::extract_text_from_mem_by_pages(pdf) {
        Ok(pages) => pages,
        Err(error) => panic!("the rendered PDF does not read back: {error}"),
    }
}

fn assert_contains(text: &str, expected: &str) {
    assert!(
        text.contains(expected),
        "{expected:?} is not in the extracted text:\n{text}"
    );
}

#[test]
fn a_paid_invoice_reads_back_with_its_number_customer_total_and_stamp() {
    let document = paid_invoice();
    let pdf = render(&document);
    assert!(pdf.starts_with(b"%PDF-"));
    let text = text_of(&pdf);

    assert_contains(&text, "Invoice CALM-2026-0042");
    assert_contains(&text, "Harbourside Bakery");
    assert_contains(&text, "Calmony Pay Ltd");
    assert_contains(&text, &format_money(document.total, "gbp"));
    assert_contains(&text, "£1,616.34");
    assert_contains(&text, "PAID");
    assert_contains(&text, "25 November 2026");
    assert_contains(&text, "26 November 2026");
    assert_contains(&text, "1 Nov 2026 – 1 Dec 2026");
    assert_contains(&text, "VAT 20% (inclusive)");
    assert_contains(&text, "Amount remaining");
    assert_contains(&text, "Tax ID: GB123456789");
    assert_contains(&text, "Thank you for your business.");
}

#[test]
fn a_draft_is_titled_draft_and_stamped_draft() {
    let document = InvoiceDocument {
        number: None,
        status: DocumentStatus::Draft,
        paid_at: None,
        ..paid_invoice()
    };
    let text = text_of(&render(&document));
    assert_contains(&text, "Draft invoice");
    assert_contains(&text, "DRAFT");
    assert!(!text.contains("PAID"));
}

#[test]
fn each_status_has_its_stamp() {
    for (status, stamp) in [
        (DocumentStatus::Open, "OPEN"),
        (DocumentStatus::Void, "VOID"),
        (DocumentStatus::Uncollectible, "UNCOLLECTIBLE"),
    ] {
        let document = InvoiceDocument {
            status,
            ..paid_invoice()
        };
        assert_contains(&text_of(&render(&document)), stamp);
    }
}

#[test]
fn parentheses_and_backslashes_in_names_do_not_break_the_content_stream() {
    let nasty = "a) Tj (b";
    let document = InvoiceDocument {
        customer: party(nasty),
        seller: party(r"Back\slash ((Ltd"),
        lines: vec![line(r"Unbalanced ) ( \ ) item", 1, 100)],
        footer: Some(r") Tj ET BT (\".to_owned()),
        ..paid_invoice()
    };
    let text = text_of(&render(&document));
    assert_contains(&text, nasty);
    assert_contains(&text, r"Back\slash ((Ltd");
    assert_contains(&text, r"Unbalanced ) ( \ ) item");
    assert_contains(&text, r") Tj ET BT (\");
}

#[test]
fn two_hundred_lines_flow_onto_further_pages_and_every_line_is_there() {
    let lines: Vec<DocumentLine> = (1..=200)
        .map(|index| line(&format!("Line item {index:03}"), index, 100))
        .collect();
    let subtotal = lines.iter().map(|line| line.amount).sum();
    let document = InvoiceDocument {
        lines,
        subtotal,
        total: subtotal,
        amount_paid: subtotal,
        ..paid_invoice()
    };
    let pdf = render(&document);
    let pages = pages_of(&pdf);
    assert!(pages.len() > 1, "200 lines fit on {} page", pages.len());

    let count = pages.len();
    for (index, page) in pages.iter().enumerate() {
        assert_contains(page, &format!("Page {} of {count}", index + 1));
    }
    for page in &pages[1..] {
        assert_contains(page, "CALM-2026-0042, continued");
        assert_contains(page, "DESCRIPTION");
    }
    let text = pages.concat();
    for index in 1..=200 {
        assert_contains(&text, &format!("Line item {index:03}"));
    }
    assert_contains(
        pages.last().map(String::as_str).unwrap_or_default(),
        &format_money(subtotal, "gbp"),
    );
}

#[test]
fn a_five_line_invoice_is_under_20_kb() {
    let pdf = render(&paid_invoice());
    assert!(pdf.len() < 20 * 1024, "{} bytes", pdf.len());
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(render(&paid_invoice()), render(&paid_invoice()));
}

#[test]
fn euros_yen_and_dashes_read_back_and_the_rest_becomes_question_marks() {
    let euro = InvoiceDocument {
        currency: "eur".to_owned(),
        customer: party("Café Zoë — Straße 5 日本"),
        ..paid_invoice()
    };
    let text = text_of(&render(&euro));
    assert_contains(&text, "€1,616.34");
    assert_contains(&text, "Café Zoë — Straße 5 ??");

    let yen = InvoiceDocument {
        currency: "jpy".to_owned(),
        lines: vec![line("Consulting", 1, 500)],
        subtotal: 500,
        total: 500,
        amount_paid: 500,
        ..paid_invoice()
    };
    assert_contains(&text_of(&render(&yen)), "¥500");
}

#[test]
fn long_descriptions_wrap_and_are_cut_after_three_lines() {
    let long = "A very long description of a line item that goes on ".repeat(20);
    let document = InvoiceDocument {
        lines: vec![line(&long, 1, 100), line("Short item after it", 1, 100)],
        ..paid_invoice()
    };
    let text = text_of(&render(&document));
    assert_contains(&text, "A very long description");
    assert_contains(&text, "…");
    assert_contains(&text, "Short item after it");
}

#[test]
fn extreme_and_empty_inputs_render_without_panicking() {
    let extreme_line = DocumentLine {
        description: String::new(),
        quantity: i64::MIN,
        unit_amount: Some(i64::MIN),
        amount: i64::MAX,
        period: Some((i64::MIN, i64::MAX)),
    };
    let document = InvoiceDocument {
        seller: Party::default(),
        brand_color: Some([255, 255, 255]),
        customer: Party {
            name: "x".repeat(10_000),
            address_lines: vec![String::new(); 100],
            email: Some(String::new()),
            tax_id: Some("\u{0}\n\t\r".to_owned()),
        },
        number: Some(String::new()),
        status: DocumentStatus::Uncollectible,
        currency: String::new(),
        issued_at: i64::MIN,
        due_at: Some(i64::MAX),
        paid_at: Some(0),
        lines: vec![
            extreme_line.clone(),
            DocumentLine {
                description: "y".repeat(100_000),
                unit_amount: None,
                ..extreme_line
            },
        ],
        subtotal: i64::MIN,
        taxes: vec![
            DocumentTax {
                label: String::new(),
                amount: i64::MIN,
            };
            300
        ],
        total: i64::MIN,
        amount_paid: i64::MAX,
        amount_remaining: i64::MIN,
        footer: Some("\n\n".repeat(1000) + &"z ".repeat(100_000)),
    };
    let pages = pages_of(&render(&document));
    assert!(pages.len() > 1);
    let text = pages.concat();
    assert_contains(&text, "-92,233,720,368,547,758.08");
    assert_contains(&text, "unknown date");

    let empty = InvoiceDocument {
        lines: Vec::new(),
        taxes: Vec::new(),
        footer: None,
        due_at: None,
        paid_at: None,
        ..paid_invoice()
    };
    assert_contains(&text_of(&render(&empty)), "Subtotal");
}

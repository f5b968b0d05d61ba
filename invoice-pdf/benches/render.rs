//! Rendering benchmark: a realistic five-line invoice rendered 10,000 times, one at a time
//! on one thread; prints p50, p99 and the mean render time and the file's size.
//! Targets: under 2 ms a render, under 20 KB a file.
//!
//! `cargo bench -p invoice-pdf`

use std::hint::black_box;
use std::time::{Duration, Instant};

use invoice_pdf::{render, DocumentLine, DocumentStatus, DocumentTax, InvoiceDocument, Party};

const RENDERS: usize = 10_000;
const WARM_UP_RENDERS: usize = 200;
const TARGET_RENDER: Duration = Duration::from_millis(2);
const TARGET_BYTES: usize = 20 * 1024;

/// 2026-11-01T00:00:00Z.
const NOVEMBER_1_2026: i64 = 1_793_491_200;
const DAY_SECONDS: i64 = 86_400;

fn main() {
    let document = realistic_invoice();
    for _ in 0..WARM_UP_RENDERS {
        black_box(render(black_box(&document)));
    }

    let mut durations = Vec::with_capacity(RENDERS);
    let mut bytes = 0;
    for _ in 0..RENDERS {
        let started = Instant::now();
        let pdf = render(black_box(&document));
        durations.push(started.elapsed());
        bytes = black_box(pdf).len();
    }
    durations.sort_unstable();

    let percentile = |fraction: f64| {
        let index = ((durations.len() - 1) as f64 * fraction).round() as usize;
        durations[index]
    };
    let total: Duration = durations.iter().sum();
    let mean = total / RENDERS as u32;
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("invoice-pdf render: a 5-line invoice, {RENDERS} renders on one thread");
    println!("  p50   {:8.1} µs", micros(percentile(0.50)));
    println!("  p99   {:8.1} µs", micros(percentile(0.99)));
    println!("  mean  {:8.1} µs", micros(mean));
    println!("  max   {:8.1} µs", micros(percentile(1.0)));
    println!("  size  {bytes} bytes");
    let fast_enough = percentile(0.99) < TARGET_RENDER;
    let small_enough = bytes < TARGET_BYTES;
    println!(
        "  targets: p99 < {} µs {}, size < {TARGET_BYTES} bytes {}",
        TARGET_RENDER.as_micros(),
        if fast_enough { "met" } else { "MISSED" },
        if small_enough { "met" } else { "MISSED" },
    );
}

fn realistic_invoice() -> InvoiceDocument {
    let month = (NOVEMBER_1_2026, NOVEMBER_1_2026 + 30 * DAY_SECONDS);
    let line = |description: &str, quantity: i64, unit_amount: i64, period| DocumentLine {
        description: description.to_owned(),
        quantity,
        unit_amount: Some(unit_amount),
        amount: quantity * unit_amount,
        period,
    };
    let lines = vec![
        line("Calmony Pay Growth plan (monthly)", 1, 4_900, Some(month)),
        line("Additional seats", 12, 800, Some(month)),
        line(
            "Card payments processed: 1.4% + 20p per successful European card charge",
            3_214,
            31,
            Some(month),
        ),
        line("Dedicated webhook relay", 1, 2_500, Some(month)),
        line("Onboarding workshop – half day, remote", 1, 45_000, None),
    ];
    let subtotal: i64 = lines.iter().map(|line| line.amount).sum();
    let tax = subtotal / 6;
    InvoiceDocument {
        seller: Party {
            name: "Calmony Pay Ltd".to_owned(),
            address_lines: vec![
                "10 Finsbury Square".to_owned(),
                "London EC2A 1AF".to_owned(),
                "United Kingdom".to_owned(),
            ],
            email: Some("billing@calmony.example".to_owned()),
            tax_id: Some("GB 123 4567 89".to_owned()),
        },
        brand_color: Some([0x1F, 0x6F, 0x5C]),
        customer: Party {
            name: "Åsa Lindqvist & Partners (Bristol)".to_owned(),
            address_lines: vec![
                "Unit 4, Harbourside Works".to_owned(),
                "Bristol BS1 5TX".to_owned(),
                "United Kingdom".to_owned(),
            ],
            email: Some("accounts@lindqvist.example".to_owned()),
            tax_id: None,
        },
        number: Some("CALM-2026-0042".to_owned()),
        status: DocumentStatus::Open,
        currency: "gbp".to_owned(),
        issued_at: NOVEMBER_1_2026 + 30 * DAY_SECONDS,
        due_at: Some(NOVEMBER_1_2026 + 44 * DAY_SECONDS),
        paid_at: None,
        lines,
        subtotal,
        taxes: vec![DocumentTax {
            label: "VAT 20% (inclusive)".to_owned(),
            amount: tax,
        }],
        total: subtotal,
        amount_paid: 0,
        amount_remaining: subtotal,
        footer: Some(
            "Thank you for your business. Pay by bank transfer to Calmony Pay Ltd, sort code \
             00-00-00, account 12345678, quoting the invoice number.\nQuestions? Write to \
             billing@calmony.example."
                .to_owned(),
        ),
    }
}

//! Renders an invoice as a PDF: an [`InvoiceDocument`] in, the bytes of an A4 PDF out.
//!
//! Pure: no I/O, no database, no clock; the same document always gives the same bytes, and
//! no input makes it panic (amounts of any size or sign, empty or hostile strings, thousands
//! of lines, which flow onto further pages). The text is drawn in the standard Helvetica
//! fonts with WinAnsiEncoding, so nothing is embedded, files stay a few kilobytes, and
//! readers extract the text exactly; characters WinAnsi lacks are drawn as '?'.
//!
//! A crate of its own because the server (serving `invoice.invoice_pdf`) and the rendering
//! benchmark both use it, and so that `pdf-writer` stays out of every other crate. It must
//! never depend on our other crates: the caller turns its invoice into an
//! [`InvoiceDocument`].

mod canvas;
mod dates;
mod invoice;
mod metrics;
mod money;
mod text;

pub use money::format_money;

/// A seller or a customer as the invoice names them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    pub name: String,
    /// Street, town, postcode, country: one line each, as they should be printed. Only the
    /// first eight are printed.
    pub address_lines: Vec<String>,
    pub email: Option<String>,
    /// A VAT or other tax registration number, printed as "Tax ID: …".
    pub tax_id: Option<String>,
}

/// Where the invoice stands, shown as a stamp: DRAFT, OPEN, PAID, VOID or UNCOLLECTIBLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentStatus {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

/// One row of the invoice's table. Amounts are in the invoice currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentLine {
    /// Wrapped to at most three lines, the third ending in an ellipsis if cut short.
    pub description: String,
    pub quantity: i64,
    /// The price of one, when the line has one.
    pub unit_amount: Option<i64>,
    pub amount: i64,
    /// The service period, unix seconds from and to, printed under the description as
    /// "1 Nov 2026 – 1 Dec 2026".
    pub period: Option<(i64, i64)>,
}

/// One tax in the totals, such as "VAT 20% (inclusive)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentTax {
    pub label: String,
    pub amount: i64,
}

/// Everything printed on an invoice, already decided: this crate computes nothing, it only
/// lays out. Amounts are in the currency's minor unit (pence, cents; yen have none) and may
/// be negative; times are unix seconds, printed as UTC dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceDocument {
    pub seller: Party,
    /// The header band's colour; a calm blue when `None`.
    pub brand_color: Option<[u8; 3]>,
    pub customer: Party,
    /// `None` for a draft, which is titled "Draft invoice".
    pub number: Option<String>,
    pub status: DocumentStatus,
    /// Lowercase ISO 4217, as Stripe writes it: "gbp", "eur", "usd", "jpy".
    pub currency: String,
    pub issued_at: i64,
    pub due_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub lines: Vec<DocumentLine>,
    pub subtotal: i64,
    pub taxes: Vec<DocumentTax>,
    pub total: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    /// Printed after the totals; line breaks start new paragraphs. Only the first thirty
    /// lines are printed.
    pub footer: Option<String>,
}

/// The invoice as the bytes of a PDF file: A4 pages, as many as its lines need.
pub fn render(document: &InvoiceDocument) -> Vec<u8> {
    invoice::render(document)
}

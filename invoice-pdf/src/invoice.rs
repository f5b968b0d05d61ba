//! What goes where on an invoice: the header band, the parties, the dates and status, the
//! table of lines flowing over as many pages as it needs, the totals and the footer.

use crate::canvas::{Canvas, Rgb, PAGE_HEIGHT, PAGE_WIDTH};
use crate::dates::{long_date, period};
use crate::money::{format_money, format_quantity};
use crate::text::{encode, Font, Style};
use crate::{DocumentLine, DocumentStatus, InvoiceDocument, Party};

const MARGIN: f32 = 48.0;
const RIGHT: f32 = PAGE_WIDTH - MARGIN;
/// Nothing but the page number is drawn below this.
const BOTTOM: f32 = 60.0;
const PAGE_NUMBER_BASELINE: f32 = 32.0;

const BAND_HEIGHT: f32 = 88.0;
const CONTINUATION_BAND_HEIGHT: f32 = 24.0;

// The table's columns: a description, then three right-aligned numbers.
const DESCRIPTION_X: f32 = MARGIN + 6.0;
const DESCRIPTION_WIDTH: f32 = 250.0;
const QUANTITY_RIGHT: f32 = 362.0;
const QUANTITY_WIDTH: f32 = 52.0;
const UNIT_PRICE_RIGHT: f32 = 455.0;
const UNIT_PRICE_WIDTH: f32 = 86.0;
const AMOUNT_RIGHT: f32 = RIGHT - 6.0;
const AMOUNT_WIDTH: f32 = 80.0;
const TABLE_HEADER_HEIGHT: f32 = 20.0;
const LINE_HEIGHT: f32 = 13.0;

// The totals: labels from here, amounts ending at AMOUNT_RIGHT.
const TOTALS_LABEL_X: f32 = 320.0;
const TOTALS_LABEL_WIDTH: f32 = 130.0;
const TOTALS_ROW_HEIGHT: f32 = 17.0;

// Bounds on what grows with the input, so that the first page's header always fits.
const MAX_ADDRESS_LINES: usize = 8;
const MAX_DESCRIPTION_LINES: usize = 3;
const MAX_FOOTER_LINES: usize = 30;

const PARTY_COLUMN_WIDTH: f32 = 230.0;
const BILL_TO_X: f32 = 300.0;

const SELLER_IN_BAND: Style = Style::new(Font::Bold, 22.0);
const TITLE: Style = Style::new(Font::Bold, 18.0);
const STAMP: Style = Style::new(Font::Bold, 14.0);
const SUMMARY: Style = Style::new(Font::Bold, 13.0);
const LABEL: Style = Style::new(Font::Bold, 8.0);
const BODY: Style = Style::new(Font::Regular, 10.0);
const BODY_BOLD: Style = Style::new(Font::Bold, 10.0);
const SMALL: Style = Style::new(Font::Regular, 8.5);
const GRAND_TOTAL: Style = Style::new(Font::Bold, 11.0);

const INK: Rgb = [0.13, 0.15, 0.18];
const MUTED: Rgb = [0.42, 0.45, 0.5];
const RULE: Rgb = [0.85, 0.87, 0.9];
const TABLE_HEADER_FILL: Rgb = [0.95, 0.96, 0.97];
const WHITE: Rgb = [1.0, 1.0, 1.0];
const PAID_GREEN: Rgb = [0.09, 0.55, 0.33];
const OPEN_BLUE: Rgb = [0.16, 0.4, 0.75];
const UNCOLLECTIBLE_RED: Rgb = [0.75, 0.18, 0.18];

/// A calm blue, for sellers who have not chosen a colour.
const DEFAULT_BRAND_COLOR: [u8; 3] = [0x2E, 0x5E, 0xAA];

pub(crate) fn render(document: &InvoiceDocument) -> Vec<u8> {
    let mut layout = Layout::new(document);
    layout.first_page_header();
    layout.table_header();
    for line in &document.lines {
        layout.line(line);
    }
    layout.totals();
    layout.footer();
    layout.finish()
}

/// The canvas and where on the current page the next thing goes.
struct Layout<'a> {
    document: &'a InvoiceDocument,
    canvas: Canvas,
    /// The top of the free space on the current page.
    cursor: f32,
    brand: Rgb,
    title: String,
}

impl<'a> Layout<'a> {
    fn new(document: &'a InvoiceDocument) -> Self {
        let [red, green, blue] = document.brand_color.unwrap_or(DEFAULT_BRAND_COLOR);
        let title = match &document.number {
            Some(number) => format!("Invoice {number}"),
            None => "Draft invoice".to_owned(),
        };
        Self {
            document,
            canvas: Canvas::new(),
            cursor: PAGE_HEIGHT,
            brand: [red, green, blue].map(|channel| f32::from(channel) / 255.0),
            title,
        }
    }

    /// White on a dark brand colour, ink on a light one.
    fn on_brand(&self) -> Rgb {
        let [red, green, blue] = self.brand;
        let luminance = 0.299 * red + 0.587 * green + 0.114 * blue;
        if luminance > 0.6 {
            INK
        } else {
            WHITE
        }
    }

    fn first_page_header(&mut self) {
        let document = self.document;
        let on_brand = self.on_brand();
        let page = self.canvas.page();
        page.fill_rect(
            0.0,
            PAGE_HEIGHT - BAND_HEIGHT,
            PAGE_WIDTH,
            BAND_HEIGHT,
            self.brand,
        );
        let seller = SELLER_IN_BAND.truncated(encode(&document.seller.name), RIGHT - MARGIN);
        page.text(
            MARGIN,
            PAGE_HEIGHT - 53.0,
            SELLER_IN_BAND,
            on_brand,
            &seller,
        );
        self.cursor = PAGE_HEIGHT - BAND_HEIGHT - 40.0;

        self.title_and_status();
        self.dates();
        self.cursor -= 16.0;
        self.parties();
        self.summary();
        self.cursor -= 24.0;
    }

    /// "Invoice INV-0042" and, opposite it, the status stamp.
    fn title_and_status(&mut self) {
        let (status, color) = match self.document.status {
            DocumentStatus::Draft => ("DRAFT", MUTED),
            DocumentStatus::Open => ("OPEN", OPEN_BLUE),
            DocumentStatus::Paid => ("PAID", PAID_GREEN),
            DocumentStatus::Void => ("VOID", MUTED),
            DocumentStatus::Uncollectible => ("UNCOLLECTIBLE", UNCOLLECTIBLE_RED),
        };
        let status = status.as_bytes();
        let stamp_padding = 10.0;
        let stamp_width = STAMP.width(status) + 2.0 * stamp_padding;
        let baseline = self.cursor;
        let title_width = RIGHT - MARGIN - stamp_width - 24.0;
        let title = TITLE.truncated(encode(&self.title), title_width);

        let page = self.canvas.page();
        page.text(MARGIN, baseline, TITLE, INK, &title);
        let stamp_left = RIGHT - stamp_width;
        page.stroke_rect(stamp_left, baseline - 8.0, stamp_width, 26.0, color, 1.5);
        page.text(stamp_left + stamp_padding, baseline, STAMP, color, status);
        self.cursor -= 28.0;
    }

    fn dates(&mut self) {
        let document = self.document;
        let rows = [
            Some(("Date of issue", document.issued_at)),
            document.due_at.map(|due_at| ("Date due", due_at)),
            document.paid_at.map(|paid_at| ("Date paid", paid_at)),
        ];
        for (label, unix_seconds) in rows.into_iter().flatten() {
            let page = self.canvas.page();
            page.text(MARGIN, self.cursor, BODY, MUTED, label.as_bytes());
            page.text(
                MARGIN + 90.0,
                self.cursor,
                BODY,
                INK,
                &encode(&long_date(unix_seconds)),
            );
            self.cursor -= 15.0;
        }
    }

    /// The seller and, beside it, the customer.
    fn parties(&mut self) {
        let document = self.document;
        let top = self.cursor;
        let seller_bottom = self.party(MARGIN, top, "FROM", &document.seller);
        let customer_bottom = self.party(BILL_TO_X, top, "BILL TO", &document.customer);
        self.cursor = seller_bottom.min(customer_bottom);
    }

    /// Draws a party's block with its top at `top`; returns where it ends.
    fn party(&mut self, x: f32, top: f32, label: &str, party: &Party) -> f32 {
        let page = self.canvas.page();
        let mut baseline = top;
        page.text(x, baseline, LABEL, MUTED, label.as_bytes());
        baseline -= 15.0;
        let name = BODY_BOLD.truncated(encode(&party.name), PARTY_COLUMN_WIDTH);
        page.text(x, baseline, BODY_BOLD, INK, &name);
        let details = party
            .address_lines
            .iter()
            .take(MAX_ADDRESS_LINES)
            .cloned()
            .chain(party.email.clone())
            .chain(
                party
                    .tax_id
                    .as_ref()
                    .map(|tax_id| format!("Tax ID: {tax_id}")),
            );
        for detail in details {
            baseline -= LINE_HEIGHT;
            let detail = BODY.truncated(encode(&detail), PARTY_COLUMN_WIDTH);
            page.text(x, baseline, BODY, INK, &detail);
        }
        baseline - 8.0
    }

    /// One sentence with what the reader must know: how much is due and when, or that it
    /// was paid.
    fn summary(&mut self) {
        let document = self.document;
        let currency = &document.currency;
        let dated = |verb: &str, amount: i64, date: Option<i64>| match date {
            Some(date) => format!(
                "{} {verb} {}",
                format_money(amount, currency),
                long_date(date)
            ),
            None => format!("{} {verb}", format_money(amount, currency)),
        };
        let summary = match document.status {
            DocumentStatus::Paid => dated("paid", document.amount_paid, document.paid_at),
            DocumentStatus::Open | DocumentStatus::Uncollectible => {
                dated("due", document.amount_remaining, document.due_at)
            }
            DocumentStatus::Draft | DocumentStatus::Void => return,
        };
        self.cursor -= 22.0;
        let summary = SUMMARY.truncated(encode(&summary), RIGHT - MARGIN);
        self.canvas
            .page()
            .text(MARGIN, self.cursor, SUMMARY, INK, &summary);
        self.cursor -= 8.0;
    }

    /// Makes sure `height` points fit above the bottom margin, turning the page if not; a
    /// page turned inside the table repeats the table's header.
    fn ensure_space(&mut self, height: f32, in_table: bool) {
        if self.cursor - height >= BOTTOM {
            return;
        }
        self.canvas.turn_page();
        let page = self.canvas.page();
        page.fill_rect(
            0.0,
            PAGE_HEIGHT - CONTINUATION_BAND_HEIGHT,
            PAGE_WIDTH,
            CONTINUATION_BAND_HEIGHT,
            self.brand,
        );
        let baseline = PAGE_HEIGHT - CONTINUATION_BAND_HEIGHT - 28.0;
        let continued = encode(&format!("{}, continued", self.title));
        let continued = BODY.truncated(continued, 200.0);
        page.text_right(RIGHT, baseline, BODY, MUTED, &continued);
        let seller = BODY_BOLD.truncated(encode(&self.document.seller.name), 260.0);
        page.text(MARGIN, baseline, BODY_BOLD, INK, &seller);
        self.cursor = baseline - 20.0;
        if in_table {
            self.table_header();
        }
    }

    fn table_header(&mut self) {
        self.ensure_space(TABLE_HEADER_HEIGHT + 40.0, false);
        let top = self.cursor;
        let baseline = top - 13.5;
        let page = self.canvas.page();
        page.fill_rect(
            MARGIN,
            top - TABLE_HEADER_HEIGHT,
            RIGHT - MARGIN,
            TABLE_HEADER_HEIGHT,
            TABLE_HEADER_FILL,
        );
        page.text(DESCRIPTION_X, baseline, LABEL, MUTED, b"DESCRIPTION");
        page.text_right(QUANTITY_RIGHT, baseline, LABEL, MUTED, b"QTY");
        page.text_right(UNIT_PRICE_RIGHT, baseline, LABEL, MUTED, b"UNIT PRICE");
        page.text_right(AMOUNT_RIGHT, baseline, LABEL, MUTED, b"AMOUNT");
        self.cursor -= TABLE_HEADER_HEIGHT;
    }

    fn line(&mut self, line: &DocumentLine) {
        let document = self.document;
        let currency = &document.currency;
        let description = BODY.wrapped(
            &encode(&line.description),
            DESCRIPTION_WIDTH,
            MAX_DESCRIPTION_LINES,
        );
        let period = line
            .period
            .map(|(start, end)| SMALL.truncated(encode(&period(start, end)), DESCRIPTION_WIDTH));
        let text_lines = description.len().max(1) as f32;
        let height =
            15.0 + (text_lines - 1.0) * LINE_HEIGHT + period.as_ref().map_or(0.0, |_| 11.0) + 8.0;
        self.ensure_space(height, true);

        let first_baseline = self.cursor - 15.0;
        let page = self.canvas.page();
        let mut baseline = first_baseline;
        for (index, text) in description.iter().enumerate() {
            if index > 0 {
                baseline -= LINE_HEIGHT;
            }
            page.text(DESCRIPTION_X, baseline, BODY, INK, text);
        }
        if let Some(period) = period {
            baseline -= 11.0;
            page.text(DESCRIPTION_X, baseline, SMALL, MUTED, &period);
        }
        let numbers = [
            (
                QUANTITY_RIGHT,
                QUANTITY_WIDTH,
                format_quantity(line.quantity),
            ),
            (
                UNIT_PRICE_RIGHT,
                UNIT_PRICE_WIDTH,
                line.unit_amount
                    .map(|unit_amount| format_money(unit_amount, currency))
                    .unwrap_or_default(),
            ),
            (
                AMOUNT_RIGHT,
                AMOUNT_WIDTH,
                format_money(line.amount, currency),
            ),
        ];
        for (right, width, number) in numbers {
            let number = encode(&number);
            let style = BODY.shrunk_to_fit(&number, width);
            page.text_right(right, first_baseline, style, INK, &number);
        }
        let bottom = baseline - 8.0;
        page.rule(MARGIN, RIGHT, bottom, RULE, 0.5);
        self.cursor = bottom;
    }

    fn totals(&mut self) {
        let document = self.document;
        self.cursor -= 8.0;
        self.total_row("Subtotal", document.subtotal, BODY);
        for tax in &document.taxes {
            self.total_row(&tax.label, tax.amount, BODY);
        }
        self.ensure_space(4.0, false);
        self.canvas
            .page()
            .rule(TOTALS_LABEL_X, AMOUNT_RIGHT, self.cursor - 2.0, RULE, 0.75);
        self.cursor -= 4.0;
        self.total_row("Total", document.total, BODY_BOLD);
        self.total_row("Amount paid", document.amount_paid, BODY);
        self.total_row("Amount remaining", document.amount_remaining, GRAND_TOTAL);
    }

    fn total_row(&mut self, label: &str, amount: i64, style: Style) {
        self.ensure_space(TOTALS_ROW_HEIGHT, false);
        let baseline = self.cursor - 13.0;
        let label = style.truncated(encode(label), TOTALS_LABEL_WIDTH);
        let amount = encode(&format_money(amount, &self.document.currency));
        let amount_style = style.shrunk_to_fit(&amount, AMOUNT_WIDTH);
        let page = self.canvas.page();
        page.text(TOTALS_LABEL_X, baseline, style, INK, &label);
        page.text_right(AMOUNT_RIGHT, baseline, amount_style, INK, &amount);
        self.cursor -= TOTALS_ROW_HEIGHT;
    }

    fn footer(&mut self) {
        let Some(footer) = &self.document.footer else {
            return;
        };
        self.cursor -= 24.0;
        let mut remaining = MAX_FOOTER_LINES;
        for paragraph in footer.lines() {
            if remaining == 0 {
                break;
            }
            let lines = SMALL.wrapped(&encode(paragraph), RIGHT - MARGIN, remaining);
            remaining = remaining.saturating_sub(lines.len().max(1));
            if lines.is_empty() {
                // A blank line between paragraphs.
                self.cursor -= 12.0;
            }
            for text in lines {
                self.ensure_space(12.0, false);
                self.cursor -= 12.0;
                self.canvas
                    .page()
                    .text(MARGIN, self.cursor, SMALL, MUTED, &text);
            }
        }
    }

    /// Numbers the pages and assembles the file.
    fn finish(mut self) -> Vec<u8> {
        let page_count = self.canvas.page_count();
        let title = encode(&self.title);
        let title = SMALL.truncated(title, 300.0);
        for (index, page) in self.canvas.pages_mut().enumerate() {
            let number = format!("Page {} of {page_count}", index + 1);
            page.text(MARGIN, PAGE_NUMBER_BASELINE, SMALL, MUTED, &title);
            page.text_right(RIGHT, PAGE_NUMBER_BASELINE, SMALL, MUTED, number.as_bytes());
        }
        self.canvas.into_pdf(&self.title)
    }
}

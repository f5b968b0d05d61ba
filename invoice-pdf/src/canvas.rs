//! Pages being drawn on, and their assembly into one PDF.
//!
//! A page is a content stream; coordinates are points (1/72 inch) from the bottom left. Every
//! page shares the two standard fonts, which are referenced by name and never embedded.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Settings, Str, TextStr};

use crate::text::{Font, Style};

/// A4, 210 × 297 mm.
pub(crate) const PAGE_WIDTH: f32 = 595.0;
pub(crate) const PAGE_HEIGHT: f32 = 842.0;

/// A colour as red, green and blue from 0 to 1.
pub(crate) type Rgb = [f32; 3];

/// What the document information dictionary names as having made the file.
const PRODUCER: &str = "Calmony Pay";

/// One page's drawing: shapes and WinAnsi text.
pub(crate) struct Page {
    content: Content,
    /// The fill colour last set, so that runs of text in one colour set it once.
    fill: Option<Rgb>,
}

impl Page {
    fn new() -> Self {
        Self {
            content: Content::new(),
            fill: None,
        }
    }

    fn set_fill(&mut self, color: Rgb) {
        if self.fill != Some(color) {
            let [red, green, blue] = color;
            self.content.set_fill_rgb(red, green, blue);
            self.fill = Some(color);
        }
    }

    /// Draws `text` (WinAnsi bytes) with its baseline starting at (`x`, `y`).
    pub(crate) fn text(&mut self, x: f32, y: f32, style: Style, color: Rgb, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        self.set_fill(color);
        self.content
            .begin_text()
            .set_font(style.font.resource_name(), style.size)
            .next_line(x, y)
            .show(Str(text))
            .end_text();
    }

    /// Draws `text` so that it ends at `right`.
    pub(crate) fn text_right(&mut self, right: f32, y: f32, style: Style, color: Rgb, text: &[u8]) {
        self.text(right - style.width(text), y, style, color, text);
    }

    /// Fills a rectangle whose bottom left corner is (`x`, `y`).
    pub(crate) fn fill_rect(&mut self, x: f32, y: f32, width: f32, height: f32, color: Rgb) {
        self.set_fill(color);
        self.content.rect(x, y, width, height).fill_nonzero();
    }

    /// Outlines a rectangle whose bottom left corner is (`x`, `y`).
    pub(crate) fn stroke_rect(
        &mut self,
        x: f32,
        y: f32,
        width: f32,
        height: f32,
        color: Rgb,
        line_width: f32,
    ) {
        let [red, green, blue] = color;
        self.content
            .set_stroke_rgb(red, green, blue)
            .set_line_width(line_width)
            .rect(x, y, width, height)
            .stroke();
    }

    /// A horizontal rule from `left` to `right` at height `y`.
    pub(crate) fn rule(&mut self, left: f32, right: f32, y: f32, color: Rgb, line_width: f32) {
        let [red, green, blue] = color;
        self.content
            .set_stroke_rgb(red, green, blue)
            .set_line_width(line_width)
            .move_to(left, y)
            .line_to(right, y)
            .stroke();
    }
}

/// The pages of a document, the last one being drawn on.
pub(crate) struct Canvas {
    finished: Vec<Page>,
    current: Page,
}

impl Canvas {
    pub(crate) fn new() -> Self {
        Self {
            finished: Vec::new(),
            current: Page::new(),
        }
    }

    /// The page being drawn on.
    pub(crate) fn page(&mut self) -> &mut Page {
        &mut self.current
    }

    /// Starts a new page and draws on it from now on.
    pub(crate) fn turn_page(&mut self) {
        let full = std::mem::replace(&mut self.current, Page::new());
        self.finished.push(full);
    }

    pub(crate) fn page_count(&self) -> usize {
        self.finished.len() + 1
    }

    /// Every page, first to last, to draw what can only be drawn once all pages exist, such
    /// as "Page 2 of 3".
    pub(crate) fn pages_mut(&mut self) -> impl Iterator<Item = &mut Page> {
        self.finished
            .iter_mut()
            .chain(std::iter::once(&mut self.current))
    }

    /// The PDF file: a catalog, the page tree, the pages, the two fonts and a title.
    pub(crate) fn into_pdf(self, title: &str) -> Vec<u8> {
        let catalog_id = Ref::new(1);
        let page_tree_id = Ref::new(2);
        let info_id = Ref::new(3);
        let font_ids = [(Font::Regular, Ref::new(4)), (Font::Bold, Ref::new(5))];
        // Each page is followed by its content stream: page i is 6 + 2i, its content 7 + 2i.
        let page_id = |index: usize| reference(index.saturating_mul(2).saturating_add(6));
        let content_id = |index: usize| reference(index.saturating_mul(2).saturating_add(7));

        let pages: Vec<Page> = self
            .finished
            .into_iter()
            .chain(std::iter::once(self.current))
            .collect();
        let page_count = i32::try_from(pages.len()).unwrap_or(i32::MAX);

        let mut pdf = Pdf::with_settings(Settings { pretty: false });
        pdf.catalog(catalog_id).pages(page_tree_id);
        pdf.pages(page_tree_id)
            .kids((0..pages.len()).map(page_id))
            .count(page_count);
        for (index, page) in pages.into_iter().enumerate() {
            let mut writer = pdf.page(page_id(index));
            writer
                .parent(page_tree_id)
                .media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
                .contents(content_id(index));
            let mut resources = writer.resources();
            let mut fonts = resources.fonts();
            for (font, id) in font_ids {
                fonts.pair(font.resource_name(), id);
            }
            fonts.finish();
            resources.finish();
            writer.finish();
            pdf.stream(content_id(index), &page.content.finish());
        }
        for (font, id) in font_ids {
            pdf.type1_font(id)
                .base_font(font.base_font())
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        pdf.document_info(info_id)
            .title(TextStr(title))
            .producer(TextStr(PRODUCER));
        pdf.finish()
    }
}

/// An object number; numbers past `i32::MAX` would need more pages than memory holds.
fn reference(number: usize) -> Ref {
    Ref::new(i32::try_from(number).unwrap_or(i32::MAX).max(1))
}

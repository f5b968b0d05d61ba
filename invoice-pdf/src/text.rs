//! Text in the two standard fonts: Unicode to WinAnsi bytes, how wide they are, and fitting
//! them into a width by truncating or wrapping.
//!
//! The fonts are Helvetica and Helvetica-Bold with WinAnsiEncoding (Windows-1252), so a
//! character is one byte, readers extract the text exactly, and nothing is embedded. A
//! character WinAnsi has no code for is drawn as '?'.

use pdf_writer::Name;

use crate::metrics::{HELVETICA_BOLD_WIDTHS, HELVETICA_WIDTHS};

/// WinAnsi's ellipsis, put where text was cut short.
const ELLIPSIS: u8 = 0x85;
const SPACE: u8 = b' ';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Font {
    Regular,
    Bold,
}

impl Font {
    /// The name of the font in each page's resources.
    pub(crate) fn resource_name(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
        }
    }

    pub(crate) fn base_font(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"Helvetica"),
            Font::Bold => Name(b"Helvetica-Bold"),
        }
    }

    fn widths(self) -> &'static [u16; 224] {
        match self {
            Font::Regular => &HELVETICA_WIDTHS,
            Font::Bold => &HELVETICA_BOLD_WIDTHS,
        }
    }
}

/// A font at a size: what text is measured and drawn with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Style {
    pub(crate) font: Font,
    pub(crate) size: f32,
}

impl Style {
    pub(crate) const fn new(font: Font, size: f32) -> Self {
        Self { font, size }
    }

    /// The width of WinAnsi-encoded text, in points.
    pub(crate) fn width(self, text: &[u8]) -> f32 {
        let widths = self.font.widths();
        let thousandths: u64 = text
            .iter()
            .map(|&byte| {
                let index = usize::from(byte.saturating_sub(0x20));
                u64::from(widths[index])
            })
            .sum();
        thousandths as f32 * self.size / 1000.0
    }

    /// The same font at a size at which `text` fits `max_width`: for amounts, which must
    /// never be cut, however many digits they have.
    pub(crate) fn shrunk_to_fit(self, text: &[u8], max_width: f32) -> Self {
        let width = self.width(text);
        if width <= max_width || width <= 0.0 {
            return self;
        }
        Self::new(self.font, self.size * max_width / width)
    }

    /// `text` cut to `max_width`, ending with an ellipsis where it was cut.
    pub(crate) fn truncated(self, mut text: Vec<u8>, max_width: f32) -> Vec<u8> {
        if self.width(&text) <= max_width {
            return text;
        }
        self.cut_with_ellipsis(&mut text, max_width);
        text
    }

    /// Breaks `text` into at most `max_lines` lines no wider than `max_width`, at spaces
    /// where it can and inside a word that is wider than a line on its own. Text left over
    /// after the last line is replaced by an ellipsis.
    pub(crate) fn wrapped(self, text: &[u8], max_width: f32, max_lines: usize) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut line: Vec<u8> = Vec::new();
        let mut overflowed = false;
        'words: for word in text.split(|&byte| byte == SPACE).filter(|w| !w.is_empty()) {
            let mut word = word;
            loop {
                let separator = usize::from(!line.is_empty());
                let candidate_width =
                    self.width(&line) + self.width(&[SPACE][..separator]) + self.width(word);
                if candidate_width <= max_width {
                    if separator == 1 {
                        line.push(SPACE);
                    }
                    line.extend_from_slice(word);
                    continue 'words;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                } else {
                    // A word wider than a whole line: break it where the line is full.
                    let fitting = self.prefix_fitting(word, max_width).max(1);
                    lines.push(word[..fitting].to_vec());
                    word = &word[fitting..];
                    if word.is_empty() {
                        continue 'words;
                    }
                }
                if lines.len() >= max_lines {
                    overflowed = true;
                    break 'words;
                }
            }
        }
        if !line.is_empty() {
            if lines.len() >= max_lines {
                overflowed = true;
            } else {
                lines.push(line);
            }
        }
        if overflowed || lines.len() > max_lines {
            lines.truncate(max_lines);
            if let Some(last) = lines.last_mut() {
                self.cut_with_ellipsis(last, max_width);
            }
        }
        lines
    }

    /// How many bytes of `text` fit `max_width`.
    fn prefix_fitting(self, text: &[u8], max_width: f32) -> usize {
        let mut width = 0.0;
        for (index, &byte) in text.iter().enumerate() {
            width += self.width(&[byte]);
            if width > max_width {
                return index;
            }
        }
        text.len()
    }

    /// Drops bytes from the end of `text` until it and an ellipsis fit `max_width`, then
    /// appends the ellipsis.
    fn cut_with_ellipsis(self, text: &mut Vec<u8>, max_width: f32) {
        let room = max_width - self.width(&[ELLIPSIS]);
        let keep = self.prefix_fitting(text, room.max(0.0));
        text.truncate(keep);
        while text.last() == Some(&SPACE) {
            text.pop();
        }
        text.push(ELLIPSIS);
    }
}

/// Encodes text as WinAnsi bytes: what WinAnsi cannot show becomes '?', and control
/// characters (line breaks, tabs) become spaces.
pub(crate) fn encode(text: &str) -> Vec<u8> {
    text.chars().map(winansi).collect()
}

fn winansi(character: char) -> u8 {
    match u32::from(character) {
        // ASCII and Latin-1 are their own codes.
        code @ (0x20..=0x7E | 0xA0..=0xFF) => code as u8,
        0x00..=0x1F | 0x7F..=0x9F => SPACE,
        _ => match character {
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8A,
            '‹' => 0x8B,
            'Œ' => 0x8C,
            'Ž' => 0x8E,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9A,
            '›' => 0x9B,
            'œ' => 0x9C,
            'ž' => 0x9E,
            'Ÿ' => 0x9F,
            // Spaces and dashes WinAnsi lacks, shown as their nearest neighbour.
            '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => SPACE,
            '\u{2010}' | '\u{2011}' | '\u{2212}' => b'-',
            '\u{2012}' => 0x96,
            '\u{2015}' => 0x97,
            '\u{2028}' | '\u{2029}' => SPACE,
            _ => b'?',
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: Style = Style::new(Font::Regular, 10.0);

    #[test]
    fn ascii_and_latin1_are_their_own_codes() {
        assert_eq!(encode("Hello (1) \\ ~"), b"Hello (1) \\ ~".to_vec());
        assert_eq!(encode("£é×ÿ"), vec![0xA3, 0xE9, 0xD7, 0xFF]);
    }

    #[test]
    fn windows_1252_punctuation_and_the_euro_map_to_their_codes() {
        assert_eq!(
            encode("€–—…‘’“”•™"),
            vec![0x80, 0x96, 0x97, 0x85, 0x91, 0x92, 0x93, 0x94, 0x95, 0x99]
        );
        assert_eq!(
            encode("ŠšŽžŒœŸƒ"),
            vec![0x8A, 0x9A, 0x8E, 0x9E, 0x8C, 0x9C, 0x9F, 0x83]
        );
    }

    #[test]
    fn what_winansi_lacks_becomes_a_question_mark_and_controls_spaces() {
        assert_eq!(encode("日本 Ω 😀"), b"?? ? ?".to_vec());
        assert_eq!(encode("a\nb\tc\u{0}"), b"a b c ".to_vec());
        assert_eq!(encode("\u{80}\u{9F}"), b"  ".to_vec());
    }

    #[test]
    fn widths_follow_the_afm_metrics() {
        // Helvetica: 'a' is 556, 'i' 222, a space 278 thousandths of an em.
        assert!((BODY.width(b"ai ") - 10.56).abs() < 0.001);
        assert!((Style::new(Font::Bold, 10.0).width(b"i") - 2.78).abs() < 0.001);
        assert_eq!(BODY.width(b""), 0.0);
    }

    #[test]
    fn truncation_keeps_short_text_and_ellipsises_long_text() {
        assert_eq!(BODY.truncated(b"short".to_vec(), 100.0), b"short".to_vec());
        let cut = BODY.truncated(vec![b'x'; 200], 100.0);
        assert!(BODY.width(&cut) <= 100.0);
        assert_eq!(cut.last(), Some(&ELLIPSIS));
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_inside_long_words() {
        let lines = BODY.wrapped(b"one two three four five six seven", 60.0, 10);
        assert!(lines.len() > 1);
        for line in &lines {
            assert!(BODY.width(line) <= 60.0);
        }
        assert_eq!(
            lines.join(&b' '),
            b"one two three four five six seven".to_vec()
        );

        let long_word = vec![b'w'; 100];
        let lines = BODY.wrapped(&long_word, 60.0, 100);
        assert_eq!(lines.concat(), long_word);
    }

    #[test]
    fn wrapping_stops_at_the_line_limit_with_an_ellipsis() {
        let text = b"word ".repeat(200);
        let lines = BODY.wrapped(&text, 80.0, 3);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].last(), Some(&ELLIPSIS));
        assert!(BODY.width(&lines[2]) <= 80.0);
    }

    #[test]
    fn wrapping_nothing_gives_no_lines_and_tiny_widths_do_not_loop() {
        assert!(BODY.wrapped(b"", 60.0, 3).is_empty());
        assert!(BODY.wrapped(b"   ", 60.0, 3).is_empty());
        let lines = BODY.wrapped(b"abc def", 0.0, 3);
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn shrinking_fits_wide_amounts() {
        let wide = b"92,233,720,368,547,758.07";
        let style = BODY.shrunk_to_fit(wide, 60.0);
        assert!(style.size < 10.0);
        assert!(style.width(wide) <= 60.01);
        assert_eq!(BODY.shrunk_to_fit(b"1", 60.0), BODY);
    }
}

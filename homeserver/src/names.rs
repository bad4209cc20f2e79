//! Names people read in listings: display names, room names and topics, workspace names.
//!
//! One rule for all of them ([`clean`]), so that one name cannot pass for another:
//! - control characters (Unicode `Cc`: C0, DEL, C1, NUL included) are refused with 400
//!   `SW_BAD_REQUEST`; multi-line text (topics) may carry `\n` and `\t`, and `\r\n` is read as
//!   `\n`. The line and paragraph separators U+2028 and U+2029 count as line breaks: refused in
//!   one-line names, read as `\n` in topics;
//! - invisible characters are removed: bidirectional embeddings, overrides, isolates and marks
//!   (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), zero-width characters (U+200B,
//!   U+200C, U+2060–U+2064, U+FEFF), the deprecated format characters U+206A–U+206F, the soft
//!   hyphen, Hangul fillers, Mongolian variation selectors and vowel separator, interlinear
//!   annotation marks, musical format characters and tag characters. Removing them, rather than
//!   refusing the name, keeps text pasted from elsewhere (which often carries such marks)
//!   working, and what is stored is what everyone sees;
//! - two marks that emoji need survive where emoji need them: the zero-width joiner (U+200D)
//!   between two emoji (a family, a rainbow flag) and the variation selectors (U+FE00–U+FE0F)
//!   after an emoji or a keycap base (`1️⃣`). Elsewhere they are invisible and removed;
//! - leading and trailing white space is trimmed, after the removal (so a name made only of
//!   invisible characters is empty, and callers refuse an empty name).
//!
//! Length limits stay with the callers, counted on the cleaned text.

use crate::error::{ApiError, ApiResult};

/// Whether the text may span lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// Names: no control character at all.
    One,
    /// Topics: `\n` and `\t` allowed (and `\r\n`, U+2028, U+2029 read as `\n`).
    Many,
}

/// Checks and neutralises `value` as described in the module documentation. `field` names the
/// field in the error message.
pub fn clean(field: &str, value: &str, lines: Lines) -> ApiResult<String> {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::with_capacity(value.len());
    let mut prev: Option<char> = None;
    for (i, &c) in chars.iter().enumerate() {
        let kept = match c {
            '\n' | '\t' if lines == Lines::Many => Some(c),
            '\r' if lines == Lines::Many && chars.get(i + 1) == Some(&'\n') => None,
            '\u{2028}' | '\u{2029}' if lines == Lines::Many => Some('\n'),
            '\u{2028}' | '\u{2029}' => return Err(refused(field, c)),
            c if c.is_control() => return Err(refused(field, c)),
            '\u{200D}' => (prev.is_some_and(is_emoji) && chars.get(i + 1).copied().is_some_and(is_emoji)).then_some(c),
            '\u{FE00}'..='\u{FE0F}' => prev.is_some_and(|p| is_emoji(p) || is_keycap_base(p)).then_some(c),
            c if is_invisible(c) => None,
            c => Some(c),
        };
        if let Some(k) = kept {
            out.push(k);
            prev = Some(k);
        }
    }
    Ok(out.trim().to_string())
}

fn refused(field: &str, c: char) -> ApiError {
    ApiError::bad_request(format!("{field} must not contain control characters (found U+{:04X})", c as u32))
}

/// Characters that render as nothing (or reorder what follows) and are always removed.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
            | '\u{115F}' | '\u{1160}'   // Hangul choseong and jungseong fillers
            | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'   // Mongolian variation selectors and vowel separator
            | '\u{200B}' | '\u{200C}'   // zero-width space and non-joiner
            | '\u{200E}' | '\u{200F}'   // left-to-right and right-to-left marks
            | '\u{202A}'..='\u{202E}'   // embeddings and overrides
            | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'   // isolates, deprecated format characters
            | '\u{3164}'                // Hangul filler
            | '\u{FEFF}'                // zero-width no-break space (BOM)
            | '\u{FFA0}'                // halfwidth Hangul filler
            | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotation
            | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}' // musical symbol format characters
            | '\u{E0000}'..='\u{E0FFF}' // tags and variation selectors supplement
    )
}

/// Pictographs a zero-width joiner or a variation selector may follow (an approximation of
/// Unicode's `Extended_Pictographic`, generous on purpose: it only decides whether a joiner
/// between two of them is kept).
fn is_emoji(c: char) -> bool {
    matches!(
        c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
            | '\u{2194}'..='\u{21AA}'
            | '\u{231A}'..='\u{23FF}'
            | '\u{24C2}'
            | '\u{25AA}'..='\u{25FE}'
            | '\u{2600}'..='\u{27BF}'
            | '\u{2934}' | '\u{2935}'
            | '\u{2B00}'..='\u{2BFF}'
            | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
            | '\u{FE0F}'
            | '\u{1F000}'..='\u{1FAFF}'
    )
}

fn is_keycap_base(c: char) -> bool {
    c.is_ascii_digit() || c == '#' || c == '*'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<String, String> {
        clean("name", s, Lines::One).map_err(|e| e.to_string())
    }
    fn many(s: &str) -> Result<String, String> {
        clean("topic", s, Lines::Many).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_names_pass_unchanged_but_trimmed() {
        assert_eq!(one("Alice").unwrap(), "Alice");
        assert_eq!(one("  Zoë Ångström  ").unwrap(), "Zoë Ångström");
        assert_eq!(one("עברית עם English").unwrap(), "עברית עם English");
        assert_eq!(one("e\u{301}").unwrap(), "e\u{301}", "combining marks are visible and kept");
        assert_eq!(one("").unwrap(), "");
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\u{0}b", "\u{0}", "tab\there", "line\nbreak", "cr\r", "bell\u{7}", "del\u{7f}", "c1\u{85}x"] {
            let e = one(bad).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
        assert!(one("para\u{2029}graph").is_err(), "a paragraph separator breaks a one-line name");
        assert!(one("a\u{9f}").is_err());
    }

    #[test]
    fn topics_allow_newlines_and_tabs_only() {
        assert_eq!(many("line one\nline two\tend").unwrap(), "line one\nline two\tend");
        assert_eq!(many("windows\r\nline").unwrap(), "windows\nline");
        assert_eq!(many("a\u{2028}b\u{2029}c").unwrap(), "a\nb\nc");
        assert!(many("a\u{0}b").is_err());
        assert!(many("lone\rcarriage").is_err());
        assert!(many("esc\u{1b}[31m").is_err());
        assert_eq!(many("\n\n  topic  \n").unwrap(), "topic", "trimmed like names");
    }

    #[test]
    fn bidi_controls_and_zero_width_characters_are_removed() {
        // "alice" spelled with an override that would show "ecila", and with invisible joins.
        assert_eq!(one("\u{202E}ecila").unwrap(), "ecila");
        assert_eq!(one("ali\u{200B}ce").unwrap(), "alice");
        assert_eq!(one("ali\u{200D}ce").unwrap(), "alice", "a joiner between letters is invisible");
        assert_eq!(one("\u{2067}alice\u{2069}").unwrap(), "alice");
        assert_eq!(one("\u{FEFF}alice\u{200E}\u{200F}").unwrap(), "alice");
        assert_eq!(one("al\u{2060}ice\u{2064}").unwrap(), "alice");
        assert_eq!(one("a\u{00AD}lice").unwrap(), "alice");
        assert_eq!(one("alice\u{E0041}\u{E007F}").unwrap(), "alice");
        assert_eq!(one("alice\u{FE0F}").unwrap(), "alice", "a variation selector after a letter is invisible");
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}').chain(['\u{200B}', '\u{200C}', '\u{200D}']) {
            assert_eq!(one(&format!("x{c}y")).unwrap(), "xy", "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn a_name_of_only_invisible_characters_is_empty() {
        assert_eq!(one("\u{200B}\u{202E} \u{3164}\u{FEFF}").unwrap(), "");
        assert_eq!(many("\u{200B}\n\u{2066}").unwrap(), "");
    }

    #[test]
    fn emoji_sequences_keep_their_joiners_and_selectors() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(one(family).unwrap(), family);
        let rainbow = "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}";
        assert_eq!(one(rainbow).unwrap(), rainbow);
        let heart_on_fire = "\u{2764}\u{FE0F}\u{200D}\u{1F525}";
        assert_eq!(one(heart_on_fire).unwrap(), heart_on_fire);
        let keycap = "1\u{FE0F}\u{20E3}";
        assert_eq!(one(keycap).unwrap(), keycap);
        assert_eq!(one("\u{1F468}\u{200D}x").unwrap(), "\u{1F468}x", "a joiner needs an emoji on both sides");
    }

    #[test]
    fn names_that_looked_alike_become_equal() {
        let a = one("Support Team").unwrap();
        for disguised in ["Support\u{200B} Team", "\u{2066}Support Team\u{2069}", "Sup\u{00AD}port Te\u{2060}am"] {
            assert_eq!(one(disguised).unwrap(), a, "{disguised:?}");
        }
    }

    #[test]
    fn errors_are_bad_requests() {
        let e = clean("display_name", "a\u{0}", Lines::One).unwrap_err();
        assert_eq!(e.status_and_code().1, "SW_BAD_REQUEST");
        assert!(e.to_string().contains("display_name") && e.to_string().contains("U+0000"), "{e}");
    }
}

//! A room's banned words, and the folding that keeps them from being dodged.
//!
//! A host bans words; a comment containing one is refused (`banned_word`) and stored nowhere.
//! People dodge plain substring matching by changing case (`BAD`), typing full-width letters
//! (`ｂａｄ`), compatibility forms (`ℬ𝒶𝒹`, `㍿`), or putting spaces and invisible characters
//! between the letters (`b a d`, `b\u{200B}ad`). So the words and every comment are first
//! [`fold`]ed the same way, and the folded comment is searched for every folded word at once
//! (Aho-Corasick, from the `aho-corasick` crate: one pass over the text whatever the number of
//! words).
//!
//! Matching is by substring, as on danmaku sites (CJK text has no spaces to split words at): a
//! host who bans `ass` also refuses `class`. The list is the host's to choose.

use aho_corasick::{AhoCorasick, MatchKind};
use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{ApiError, ErrorCode};

/// Most words a room's list may hold.
pub const MAX_BANNED_WORDS: usize = 500;

/// Longest banned word, in characters, as typed (after trimming).
pub const MAX_BANNED_WORD_CHARS: usize = 32;

/// `text` as matching sees it: Unicode NFKC (full-width letters and compatibility forms become
/// their plain forms), then full case folding (the `caseless` crate: `Straße` and `STRASSE`
/// fold alike), then NFKC again (folding can undo normalisation), without whitespace and
/// without format characters (general category Cf: zero-width spaces and joiners, soft
/// hyphens, direction marks, byte-order marks).
pub fn fold(text: &str) -> String {
    text.nfkc()
        .default_case_fold()
        .nfkc()
        .filter(|c| !c.is_whitespace() && c.general_category() != GeneralCategory::Format)
        .collect()
}

/// A room's banned words, ready to match.
#[derive(Debug, Clone)]
pub struct BannedWords {
    /// The words as the host typed them (trimmed), in the order given, without duplicates.
    words: Vec<String>,
    /// The folded words, matched at once; `None` for an empty list.
    matcher: Option<AhoCorasick>,
    /// For each pattern of `matcher`, the index of its word in `words`.
    pattern_word: Vec<usize>,
}

impl Default for BannedWords {
    fn default() -> Self {
        Self::empty()
    }
}

impl BannedWords {
    /// No banned words.
    pub fn empty() -> Self {
        Self {
            words: Vec::new(),
            matcher: None,
            pattern_word: Vec::new(),
        }
    }

    /// The list `raw`, checked: at most [`MAX_BANNED_WORDS`] words, each 1 to
    /// [`MAX_BANNED_WORD_CHARS`] characters after trimming and something left after [`fold`]ing
    /// (a word of spaces or invisible characters would match everything). Words that fold alike
    /// are kept once, the first as typed.
    pub fn parse(raw: &[String]) -> Result<Self, ApiError> {
        if raw.len() > MAX_BANNED_WORDS {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("a room has at most {MAX_BANNED_WORDS} banned words"),
            ));
        }
        let mut words = Vec::new();
        let mut folded: Vec<String> = Vec::new();
        for word in raw {
            let word = word.trim();
            let chars = word.chars().count();
            if chars == 0 || chars > MAX_BANNED_WORD_CHARS {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("a banned word is 1 to {MAX_BANNED_WORD_CHARS} characters"),
                ));
            }
            if word.chars().any(char::is_control) {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    "a banned word holds no control characters",
                ));
            }
            let key = fold(word);
            if key.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("{word:?} is only spaces or invisible characters"),
                ));
            }
            if !folded.contains(&key) {
                folded.push(key);
                words.push(word.to_owned());
            }
        }
        Ok(Self::build(words, folded))
    }

    /// The list as stored: `words` were checked by [`Self::parse`] when they were set, so
    /// nothing is refused here; a word that folds to nothing is left out.
    pub fn from_stored(words: Vec<String>) -> Self {
        let mut kept = Vec::new();
        let mut folded: Vec<String> = Vec::new();
        for word in words {
            let key = fold(&word);
            if !key.is_empty() && !folded.contains(&key) {
                folded.push(key);
                kept.push(word);
            }
        }
        Self::build(kept, folded)
    }

    fn build(words: Vec<String>, folded: Vec<String>) -> Self {
        if folded.is_empty() {
            return Self::empty();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&folded)
            // Words are at most 32 characters and 500 of them: far inside the crate's limits.
            .expect("a bounded word list always builds");
        Self {
            pattern_word: (0..words.len()).collect(),
            words,
            matcher: Some(matcher),
        }
    }

    /// The words as typed.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The first banned word `text` contains (as typed by the host), if any.
    pub fn find(&self, text: &str) -> Option<&str> {
        let matcher = self.matcher.as_ref()?;
        let found = matcher.find(&fold(text))?;
        let word = self.pattern_word[found.pattern().as_usize()];
        Some(&self.words[word])
    }

    /// `Err(banned_word)` when `text` contains a banned word. The message does not repeat the
    /// word (the sender typed it; a screen share of the error need not show it again).
    pub fn check(&self, text: &str) -> Result<(), ApiError> {
        match self.find(text) {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::BannedWord,
                "this comment contains a word the host has banned in this room",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(words: &[&str]) -> BannedWords {
        BannedWords::parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
            .expect("a valid list")
    }

    #[test]
    fn dodges_by_case_width_compatibility_forms_spaces_and_invisible_characters_are_caught() {
        let banned = list(&["spoiler", "剧透"]);
        for dodge in [
            "SPOILER ahead",
            "Ｓｐｏｉｌｅｒ",                  // full-width
            "𝐬𝐩𝐨𝐢𝐥𝐞𝐫",                         // mathematical bold (compatibility)
            "s p o i l e r",                   // spaces
            "s\u{200B}po\u{200D}il\u{00AD}er", // zero-width space and joiner, soft hyphen
            "s\u{3000}poiler",                 // ideographic space
            "s\u{2060}poiler\u{FEFF}",         // word joiner, byte-order mark
            "前方剧\u{200B}透",                // CJK with a zero-width space
        ] {
            assert!(banned.find(dodge).is_some(), "{dodge:?} got through");
            assert_eq!(banned.check(dodge).unwrap_err().code, ErrorCode::BannedWord);
        }
        assert_eq!(banned.find("no spoilers here"), Some("spoiler"));
        assert!(banned.find("a spoonful of sugar").is_none());
        assert!(banned.check("fine").is_ok());
    }

    #[test]
    fn case_folding_is_full_not_just_lowercase() {
        // Lowercasing alone leaves ß as ß; case folding makes it ss.
        assert!(list(&["strasse"]).find("Die Straße").is_some());
        assert!(list(&["Straße"]).find("STRASSE").is_some());
        // Kelvin sign and Angstrom sign are compatibility forms of K and Å.
        assert_eq!(fold("\u{212A}\u{212B}"), "kå");
    }

    #[test]
    fn the_list_is_checked_and_deduplicated_by_folded_form() {
        let banned = list(&[" Bad ", "BAD", "ｂａｄ", "worse"]);
        assert_eq!(banned.words(), ["Bad", "worse"]);
        for bad in [
            vec![String::new()],
            vec!["  ".into()],
            vec!["\u{200B}\u{200D}".into()],
            vec!["x".repeat(MAX_BANNED_WORD_CHARS + 1)],
            vec!["a\nb".into()],
            vec!["w".into(); MAX_BANNED_WORDS + 1],
        ] {
            let error = BannedWords::parse(&bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidValue, "{bad:?}");
        }
        assert!(BannedWords::parse(&[]).unwrap().is_empty());
        assert!(BannedWords::empty().find("anything").is_none());
    }

    #[test]
    fn a_stored_list_matches_like_the_parsed_one() {
        let stored = BannedWords::from_stored(vec!["Bad".into(), "bad".into(), "".into()]);
        assert_eq!(stored.words(), ["Bad"]);
        assert!(stored.find("b a d").is_some());
    }
}

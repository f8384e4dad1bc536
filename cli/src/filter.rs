//! The viewer's block list for `danmaku tail` (`--hide-keyword`, `--hide-regex`,
//! `--hide-author`, `--hide-mode`, `--hide-color`, `--hide-colored`), with the same rules as the
//! pages' `web/js/filters.js`:
//!
//! - Keywords and authors are compared after Unicode NFKC and lowercasing, so the full-width
//!   `ＡＢＣ` a phone keyboard types is the `abc` of the block list. A keyword hides a comment
//!   whose text contains it; an author hides the comments of exactly that name (blocking `bob`
//!   leaves `bobby` alone).
//! - A regular expression is matched case-insensitively against the NFKC form of the text
//!   (the pages use JavaScript's `RegExp` with the `iu` flags, this the `regex` crate: the common
//!   syntax behaves the same; look-around and back-references exist only in the pages).
//! - Modes and colours are exact; `--hide-colored` hides every colour but the default white.

use regex::{Regex, RegexBuilder};
use shared_model::{Color, Danmaku, Mode};
use unicode_normalization::UnicodeNormalization;

use crate::error::CliError;

/// Largest compiled regular expression, in bytes: a pattern typed on a command line has no
/// business being bigger, and the bound keeps a typo like `a{1000}{1000}` from eating memory.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// What a viewer hides; [`BlockList::hides`] is the one question it answers.
#[derive(Debug, Default)]
pub struct BlockList {
    /// Normalised keywords (see [`fold`]).
    keywords: Vec<String>,
    /// Compiled patterns, case-insensitive.
    patterns: Vec<Regex>,
    /// Normalised author names.
    authors: Vec<String>,
    /// Modes hidden.
    modes: Vec<Mode>,
    /// Colours hidden.
    colors: Vec<Color>,
    /// Every colour but the default white is hidden.
    colored: bool,
}

/// The block list as given on the command line, before it is checked.
#[derive(Debug, Default, Clone)]
pub struct BlockArgs {
    /// `--hide-keyword` values.
    pub keywords: Vec<String>,
    /// `--hide-regex` values.
    pub regexes: Vec<String>,
    /// `--hide-author` values.
    pub authors: Vec<String>,
    /// `--hide-mode` values.
    pub modes: Vec<String>,
    /// `--hide-color` values.
    pub colors: Vec<String>,
    /// `--hide-colored`.
    pub colored: bool,
}

/// `text` in the form the block list compares: NFKC, then lowercase (NFKC first, as the pages
/// do, so that a compatibility character's lowercase is that of what it stands for).
pub fn fold(text: &str) -> String {
    text.nfkc().collect::<String>().to_lowercase()
}

impl BlockList {
    /// Checks and compiles the flags; a bad value is a usage error naming its flag.
    pub fn new(args: &BlockArgs) -> Result<Self, CliError> {
        let usage = |flag: &str, value: &str, why: String| {
            CliError::Usage(format!("{flag} {value:?}: {why}"))
        };
        let mut list = Self {
            colored: args.colored,
            ..Self::default()
        };
        for (flag, values, into) in [
            ("--hide-keyword", &args.keywords, &mut list.keywords),
            ("--hide-author", &args.authors, &mut list.authors),
        ] {
            for value in values {
                let folded = fold(value.trim());
                if folded.is_empty() {
                    return Err(usage(flag, value, "must not be empty".into()));
                }
                into.push(folded);
            }
        }
        for value in &args.regexes {
            if value.is_empty() {
                return Err(usage("--hide-regex", value, "must not be empty".into()));
            }
            let pattern = RegexBuilder::new(value)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT_BYTES)
                .build()
                .map_err(|e| usage("--hide-regex", value, format!("not a valid regex: {e}")))?;
            list.patterns.push(pattern);
        }
        for value in &args.modes {
            let mode = value
                .parse::<Mode>()
                .map_err(|e| usage("--hide-mode", value, e.message))?;
            list.modes.push(mode);
        }
        for value in &args.colors {
            let color = Color::parse(value).map_err(|e| usage("--hide-color", value, e.message))?;
            list.colors.push(color);
        }
        Ok(list)
    }

    /// Whether nothing is hidden (the tail then skips the folding altogether).
    pub fn is_empty(&self) -> bool {
        self.keywords.is_empty()
            && self.patterns.is_empty()
            && self.authors.is_empty()
            && self.modes.is_empty()
            && self.colors.is_empty()
            && !self.colored
    }

    /// Whether the viewer hides `item`.
    pub fn hides(&self, item: &Danmaku) -> bool {
        if self.is_empty() {
            return false;
        }
        if self.modes.contains(&item.mode)
            || self.colors.contains(&item.color)
            || (self.colored && item.color != Color::default())
        {
            return true;
        }
        if !self.authors.is_empty() {
            let author = fold(item.author.trim());
            if self.authors.contains(&author) {
                return true;
            }
        }
        if self.keywords.is_empty() && self.patterns.is_empty() {
            return false;
        }
        let text: String = item.text.nfkc().collect();
        if !self.keywords.is_empty() {
            let folded = text.to_lowercase();
            if self.keywords.iter().any(|k| folded.contains(k.as_str())) {
                return true;
            }
        }
        self.patterns.iter().any(|p| p.is_match(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A white scrolling comment, as a service would send it.
    fn comment(author: &str, text: &str) -> Danmaku {
        serde_json::from_value(serde_json::json!({
            "id": 1, "channel": "r", "author": author, "text": text, "color": "#ffffff",
            "mode": "scroll", "sent_at": "2026-11-30T12:00:00.000Z",
        }))
        .unwrap()
    }

    fn list(build: impl FnOnce(&mut BlockArgs)) -> BlockList {
        let mut args = BlockArgs::default();
        build(&mut args);
        BlockList::new(&args).unwrap()
    }

    #[test]
    fn an_empty_list_hides_nothing() {
        let empty = list(|_| {});
        assert!(empty.is_empty());
        assert!(!empty.hides(&comment("ann", "anything")));
    }

    #[test]
    fn keywords_match_inside_the_text_case_insensitively_and_after_nfkc() {
        let blocked = list(|a| a.keywords = vec!["SPOILER".into(), "ＡＢＣ".into()]);
        assert!(blocked.hides(&comment("ann", "huge spoiler ahead")));
        assert!(blocked.hides(&comment("ann", "xx abc xx")));
        assert!(blocked.hides(&comment("ann", "full-width ＡＢＣ too")));
        assert!(blocked.hides(&comment("ann", "half-width Abc")));
        assert!(!blocked.hides(&comment("ann", "a b c")));
        // The keyword is about the text, not the name.
        assert!(!blocked.hides(&comment("abc", "fine")));
    }

    #[test]
    fn authors_match_the_whole_name_case_insensitively_and_after_nfkc() {
        let blocked = list(|a| a.authors = vec![" Bob ".into(), "ｍａｌｌｏｒｙ".into()]);
        assert!(blocked.hides(&comment("bob", "hi")));
        assert!(blocked.hides(&comment("BOB", "hi")));
        assert!(blocked.hides(&comment("Mallory", "hi")));
        assert!(!blocked.hides(&comment("bobby", "hi")), "a whole name");
        assert!(!blocked.hides(&comment("ann", "bob says hi")));
    }

    #[test]
    fn a_regex_matches_the_nfkc_text_case_insensitively() {
        let blocked = list(|a| a.regexes = vec![r"^\d{3,}$".into(), "ha(ha)+".into()]);
        assert!(blocked.hides(&comment("ann", "2333")));
        assert!(
            blocked.hides(&comment("ann", "２３３３")),
            "full-width digits fold"
        );
        assert!(blocked.hides(&comment("ann", "HAHAHA")));
        assert!(!blocked.hides(&comment("ann", "23 33")));
        assert!(!blocked.hides(&comment("ann", "ha")));
    }

    #[test]
    fn modes_colours_and_the_coloured_switch() {
        let mut top = comment("ann", "up here");
        top.mode = Mode::Top;
        let mut red = comment("ann", "red");
        red.color = Color::parse("#FF0000").unwrap();
        let plain = comment("ann", "plain");

        let by_mode = list(|a| a.modes = vec!["top".into()]);
        assert!(by_mode.hides(&top));
        assert!(!by_mode.hides(&plain));

        let by_color = list(|a| a.colors = vec!["#ff0000".into()]);
        assert!(by_color.hides(&red), "colours compare in lowercase");
        assert!(!by_color.hides(&plain));

        let colored = list(|a| a.colored = true);
        assert!(colored.hides(&red));
        assert!(!colored.hides(&plain), "white is not coloured");
    }

    #[test]
    fn bad_values_are_refused_naming_their_flag() {
        let refused = |build: fn(&mut BlockArgs)| {
            let mut args = BlockArgs::default();
            build(&mut args);
            let err = BlockList::new(&args).unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{err:?}");
            err.to_string()
        };
        let err = refused(|a| a.regexes = vec!["(unclosed".into()]);
        assert!(
            err.starts_with("--hide-regex \"(unclosed\": not a valid regex"),
            "{err}"
        );
        let err = refused(|a| a.modes = vec!["sideways".into()]);
        assert!(err.starts_with("--hide-mode \"sideways\""), "{err}");
        assert!(err.contains("scroll"), "lists the modes: {err}");
        let err = refused(|a| a.colors = vec!["red".into()]);
        assert!(err.starts_with("--hide-color \"red\""), "{err}");
        let err = refused(|a| a.keywords = vec!["  ".into()]);
        assert!(err.starts_with("--hide-keyword"), "{err}");
        let err = refused(|a| a.authors = vec![String::new()]);
        assert!(err.starts_with("--hide-author"), "{err}");
    }
}

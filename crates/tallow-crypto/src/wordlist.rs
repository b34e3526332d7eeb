//! The EFF large wordlist (7,776 words, 12.9 bits each), shipped in the crate.
//!
//! Source: Electronic Frontier Foundation, "EFF's New Wordlists for Random
//! Passphrases" (2016), licensed CC BY 3.0 US. Four entries contain a hyphen
//! (`drop-down`, `felt-tip`, `t-shirt`, `yo-yo`); the code-phrase parser handles
//! them.

use std::sync::OnceLock;

/// Number of words in the list: 6^5, one per roll of five dice.
pub const WORDLIST_LEN: usize = 7776;

static RAW: &str = include_str!("eff_large_wordlist.txt");

/// The words, sorted, so lookups can binary-search.
pub fn wordlist() -> &'static [&'static str] {
    static WORDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| RAW.lines().filter(|l| !l.is_empty()).collect())
}

/// Whether `word` (lowercase) is in the list.
pub fn contains(word: &str) -> bool {
    wordlist().binary_search(&word).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordlist_has_7776_unique_sorted_words() {
        let words = wordlist();
        assert_eq!(words.len(), WORDLIST_LEN);
        assert!(words.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')));
        assert!(contains("abacus") && contains("zoom") && contains("t-shirt"));
        assert!(!contains("tallow-is-not-a-word"));
    }
}

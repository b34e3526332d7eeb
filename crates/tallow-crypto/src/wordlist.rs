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

/// The words that start with `prefix` (lowercase), in order.
pub fn starting_with(prefix: &str) -> &'static [&'static str] {
    let words = wordlist();
    let start = words.partition_point(|w| *w < prefix);
    let len = words[start..].partition_point(|w| w.starts_with(prefix));
    &words[start..start + len]
}

/// What `prefix` can be extended to for sure: the whole word followed by
/// `-` when only one word starts with it, else the longest prefix all the
/// words starting with it share (`None` when no word does, or there is
/// nothing to add).
pub fn complete(prefix: &str) -> Option<String> {
    match starting_with(prefix) {
        [] => None,
        [only] => Some(format!("{only}-")),
        [first, .., last] => {
            // Sorted: what the first and last share, every word between shares.
            let shared = first
                .bytes()
                .zip(last.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            (shared > prefix.len()).then(|| first[..shared].to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_complete_to_one_word_or_to_what_the_candidates_share() {
        assert_eq!(starting_with("abacu"), ["abacus"]);
        assert_eq!(complete("abac").as_deref(), Some("abacus-"));
        assert_eq!(complete("abacus").as_deref(), Some("abacus-"));
        assert!(starting_with("zoo").len() > 1);
        assert!(starting_with("zoo").iter().all(|w| w.starts_with("zoo")));
        assert_eq!(
            complete("zoo"),
            None,
            "zoom, zoology…: nothing shared to add"
        );
        assert_eq!(complete("qqq"), None);
        assert_eq!(starting_with("").len(), WORDLIST_LEN);
        let shared = complete("zoolo").expect("zoologist and zoology share zoolog");
        assert_eq!(shared, "zoolog");
    }

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

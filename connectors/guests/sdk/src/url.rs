//! Building URLs from configured bases and user-given parts.

/// `part` percent-encoded for use as one path segment or one query value: everything
/// but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded, so a `/`, `?`,
/// `#` or `&` in an argument cannot change the request's path or query.
pub fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `base` (a configured URL, with or without a trailing `/`) followed by `path` (which
/// starts with `/`).
pub fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_but_unreserved() {
        assert_eq!(encode("ABC-12"), "ABC-12");
        assert_eq!(encode("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(join("https://x.net/", "/rest"), "https://x.net/rest");
    }
}

//! HTTP performed by the host for a guest: the allow-list and the client.

use std::time::Duration;

use ureq::http;

/// Hosts a connector may reach: exact names and `*.suffix` wildcards.
#[derive(Debug, Clone)]
pub(crate) struct AllowList {
    exact: Vec<String>,
    /// Suffixes with their leading dot (`.atlassian.net`).
    suffixes: Vec<String>,
}

impl AllowList {
    /// Checks each pattern; an invalid one is an error naming it.
    pub(crate) fn new(patterns: &[String]) -> Result<Self, String> {
        let mut list = AllowList {
            exact: Vec::new(),
            suffixes: Vec::new(),
        };
        for pattern in patterns {
            let p = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
            let (wild, name) = match p.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']')
                })
                && !name.starts_with('.')
                && !name.contains("..");
            // A wildcard needs at least two labels after it (`*.com` would allow a TLD).
            if !valid || (wild && !name.contains('.')) {
                return Err(format!(
                    "invalid allow_hosts entry `{pattern}`: expected `host` or `*.domain`"
                ));
            }
            if wild {
                list.suffixes.push(format!(".{name}"));
            } else {
                list.exact.push(name.to_owned());
            }
        }
        Ok(list)
    }

    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.exact.contains(&host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

/// The host part of a URL, as the HTTP client will connect to it, if the URL is one
/// the host would send at all (absolute, `http` or `https`).
pub(crate) fn target_host(uri: &http::Uri) -> Option<String> {
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return None,
    }
    uri.host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
}

/// An agent that never follows redirects (the target of a redirect was not checked
/// against the allow-list), ignores proxy settings from the environment, and hands
/// every status to the guest.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .save_redirect_history(false)
        .user_agent("steward-connector-host")
        .build()
        .new_agent()
}

/// What the host got back, or why not.
pub(crate) enum Outcome {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No usable response (connection, TLS, timeout, malformed request).
    Transport(String),
    /// A response with a body over the cap; the rest was not read.
    TooLarge { status: u16 },
}

pub(crate) struct Request {
    pub method: String,
    pub uri: http::Uri,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// Headers a guest may not set: they would change where or how the request goes.
fn forbidden_header(name: &str) -> bool {
    [
        "host",
        "connection",
        "transfer-encoding",
        "content-length",
        "proxy-authorization",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

pub(crate) fn perform(
    agent: &ureq::Agent,
    req: Request,
    timeout: Duration,
    max_body: u64,
) -> Outcome {
    let method = match http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return Outcome::Transport(format!("invalid method `{}`", req.method)),
    };
    let mut builder = http::Request::builder().method(method).uri(req.uri);
    for (name, value) in &req.headers {
        if forbidden_header(name) {
            return Outcome::Transport(format!("header `{name}` may not be set by a connector"));
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = match builder.body(req.body.unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(format!("invalid request: {e}")),
    };
    let request = agent
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    let mut response = match agent.run(request) {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(e.to_string()),
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    match response
        .body_mut()
        .with_config()
        .limit(max_body)
        .read_to_vec()
    {
        Ok(body) => Outcome::Response {
            status,
            headers,
            body,
        },
        Err(ureq::Error::BodyExceedsLimit(_)) => Outcome::TooLarge { status },
        Err(e) => Outcome::Transport(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_and_wildcard_hosts() {
        let l = list(&["api.example.com", "*.atlassian.net"]);
        assert!(l.allows("api.example.com"));
        assert!(l.allows("API.Example.com."));
        assert!(!l.allows("example.com"));
        assert!(!l.allows("evil-api.example.com"));
        assert!(l.allows("acme.atlassian.net"));
        assert!(l.allows("a.b.atlassian.net"));
        assert!(!l.allows("atlassian.net"));
        assert!(!l.allows("evilatlassian.net"));
        assert!(!l.allows("acme.atlassian.net.evil.com"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for p in [
            "",
            "*",
            "*.com",
            "http://x.com",
            "x.com/path",
            "a..b",
            "*.*.x.com",
        ] {
            assert!(AllowList::new(&[p.to_owned()]).is_err(), "{p}");
        }
    }

    #[test]
    fn target_host_is_what_the_client_connects_to() {
        let host = |u: &str| target_host(&u.parse().unwrap());
        assert_eq!(
            host("https://api.example.com/x").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            host("http://api.example.com@evil.com/").as_deref(),
            Some("evil.com")
        );
        assert_eq!(host("http://127.0.0.1:8080/").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("ftp://example.com/"), None);
        assert_eq!(host("/relative"), None);
    }
}

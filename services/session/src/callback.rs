//! `callback_url`: after a run ends, POST its final assistant message (the `done` event's
//! `assistant_data`, as JSON) to the URL the client gave.
//!
//! - Signed: `X-Cognition-Signature: sha256=<hex HMAC-SHA256 of the body>` with the secret of
//!   `COGNITION_CALLBACK_SECRET` (no header when no secret is configured). Also sent:
//!   `X-Cognition-Session-Id`, `X-Cognition-Run-Id`, `X-Cognition-Run-Status`.
//! - Retried with exponential backoff on transport errors, 429 and 5xx (up to
//!   `COGNITION_CALLBACK_MAX_ATTEMPTS`, default 3); other answers end the delivery.
//! - Loopback, private, link-local, CGNAT, multicast and unspecified destinations are refused
//!   unless `COGNITION_CALLBACK_ALLOW_PRIVATE=true`: a literal IP is refused when the message
//!   is sent ([`check_url`] → `VALIDATION_ERROR`); a host name is resolved at delivery time,
//!   every address checked, and the connection pinned to the checked addresses (no DNS
//!   rebinding); redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::Message;

/// Signature header name.
pub const SIGNATURE_HEADER: &str = "x-cognition-signature";
/// Bound on one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Callback settings (from the service configuration).
#[derive(Clone, Default)]
pub struct CallbackSettings {
    pub secret: Option<String>,
    pub allow_private: bool,
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles for each further one.
    pub backoff: Duration,
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow_private", &self.allow_private)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Why a callback URL is refused or a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback_url is not a valid absolute URL: {0}")]
    InvalidUrl(String),
    #[error("callback_url must use http or https")]
    Scheme,
    #[error(
        "callback_url points to a private, loopback or link-local address ({0}); such \
         destinations are refused unless COGNITION_CALLBACK_ALLOW_PRIVATE=true"
    )]
    PrivateAddress(IpAddr),
    #[error("callback host {0} does not resolve: {1}")]
    Resolve(String, String),
    #[error("callback delivery failed after {attempts} attempt(s): {last}")]
    Failed { attempts: u32, last: String },
}

/// Whether `ip` is a destination a callback must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Checks a callback URL when a message is sent: an absolute http(s) URL, and (unless
/// `allow_private`) not a literal private address. Host names are checked at delivery.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, CallbackError> {
    let url = Url::parse(raw).map_err(|e| CallbackError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CallbackError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CallbackError::InvalidUrl("no host".into()));
    }
    if !allow_private
        && let Some(ip) = literal_ip(&url)
        && is_private(ip)
    {
        return Err(CallbackError::PrivateAddress(ip));
    }
    Ok(url)
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// What a delivery is about.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub session_id: Uuid,
    pub run_id: Uuid,
    /// The run's terminal state (`completed`, `failed`, `cancelled`, `interrupted`).
    pub status: String,
    pub message: Message,
}

/// Delivers callbacks.
#[derive(Debug, Clone)]
pub struct Callbacks {
    settings: CallbackSettings,
}

impl Callbacks {
    pub fn new(settings: CallbackSettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &CallbackSettings {
        &self.settings
    }

    /// Posts `delivery` with retries; returns the HTTP status of the accepted attempt.
    pub async fn deliver(&self, delivery: &Delivery) -> Result<u16, CallbackError> {
        let url = check_url(&delivery.url, self.settings.allow_private)?;
        let client = self.client_for(&url).await?;
        let body = serde_json::to_vec(&delivery.message)
            .map_err(|e| CallbackError::InvalidUrl(format!("serializing the message: {e}")))?;
        let attempts = self.settings.max_attempts.max(1);
        let mut delay = self.settings.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut request = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-cognition-session-id", delivery.session_id.to_string())
                .header("x-cognition-run-id", delivery.run_id.to_string())
                .header("x-cognition-run-status", delivery.status.as_str())
                .body(body.clone());
            if let Some(secret) = &self.settings.secret {
                request = request.header(SIGNATURE_HEADER, signature(secret, &body));
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return Ok(response.status().as_u16());
                }
                Ok(response) => {
                    let status = response.status();
                    last = format!("HTTP {status}");
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        break;
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        Err(CallbackError::Failed { attempts, last })
    }

    /// An HTTP client for `url` whose host name is pinned to checked addresses.
    async fn client_for(&self, url: &Url) -> Result<reqwest::Client, CallbackError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT);
        if let (None, Some(host)) = (literal_ip(url), url.host_str()) {
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| CallbackError::Resolve(host.to_owned(), e.to_string()))?
                .collect();
            if addrs.is_empty() {
                return Err(CallbackError::Resolve(
                    host.to_owned(),
                    "no addresses".into(),
                ));
            }
            if !self.settings.allow_private
                && let Some(bad) = addrs.iter().find(|a| is_private(a.ip()))
            {
                return Err(CallbackError::PrivateAddress(bad.ip()));
            }
            builder = builder.resolve_to_addrs(host, &addrs);
        }
        builder
            .build()
            .map_err(|e| CallbackError::InvalidUrl(format!("building the HTTP client: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert_eq!(
            check_url("http://127.0.0.1:9/x", false).unwrap_err(),
            CallbackError::PrivateAddress("127.0.0.1".parse().unwrap())
        );
        assert!(matches!(
            check_url("http://[::1]/x", false),
            Err(CallbackError::PrivateAddress(_))
        ));
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert_eq!(
            check_url("ftp://example.com", false).unwrap_err(),
            CallbackError::Scheme
        );
        assert!(matches!(
            check_url("not a url", false),
            Err(CallbackError::InvalidUrl(_))
        ));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn host_names_resolving_to_private_addresses_are_refused() {
        let callbacks = Callbacks::new(CallbackSettings {
            max_attempts: 1,
            ..Default::default()
        });
        let delivery = Delivery {
            url: "http://localhost:9/hook".into(),
            session_id: Uuid::nil(),
            run_id: Uuid::nil(),
            status: "completed".into(),
            message: crate::domain::NewMessage::text(crate::domain::Role::Assistant, "x")
                .into_message(Uuid::nil()),
        };
        assert!(matches!(
            callbacks.deliver(&delivery).await,
            Err(CallbackError::PrivateAddress(_))
        ));
    }
}

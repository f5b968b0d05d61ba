//! Where webhooks may be sent: no server-side request forgery.
//!
//! A webhook URL is chosen by whoever holds an API key, and the server sends it requests
//! and shows the answers (the deliveries log), so it must not be able to reach what only
//! the server can reach. Every address a URL's host resolves to is classified; live mode
//! refuses all but public addresses; test mode (where developers point endpoints at their
//! own machine) also allows loopback and private ones. Link-local addresses (which include
//! the cloud metadata service, 169.254.169.254 and fd00:ec2::254 aside), unspecified,
//! multicast and reserved ones are refused in both modes.
//!
//! Checked at creation and update (the API resolves the host then), and again at every
//! connection a delivery makes: the relay's HTTP clients resolve through [`GuardedResolver`],
//! which refuses a host if any of its addresses is refused and otherwise hands reqwest only
//! the addresses it checked, so the connection goes to a checked address even if DNS
//! changes between the check and the connect (DNS rebinding). IP-literal hosts never reach a
//! resolver and are checked before each attempt ([`UrlGuard::check_literal`]). The live client
//! keeps no idle connections, so each live delivery resolves and checks afresh.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use url::{Host, Url};

/// How long the API waits for DNS when it checks a URL.
pub const LOOKUP_TIMEOUT_MS: u64 = 5_000;

/// What an address is, for the purpose of deciding whether webhooks may go there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64/10), unique local IPv6 (fc00::/7).
    Private,
    /// 169.254/16 and fe80::/10, where cloud metadata services answer.
    LinkLocal,
    Unspecified,
    /// Multicast, broadcast, documentation, benchmarking and reserved ranges.
    Special,
}

impl AddressClass {
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local (metadata)",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Special => "reserved",
        }
    }

    /// Whether webhooks of this mode may go to such an address.
    pub fn allowed(self, livemode: bool) -> bool {
        match self {
            AddressClass::Public => true,
            AddressClass::Loopback | AddressClass::Private => !livemode,
            AddressClass::LinkLocal | AddressClass::Unspecified | AddressClass::Special => false,
        }
    }
}

pub fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = address.octets();
    if address.is_unspecified() || a == 0 {
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if address.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else if address.is_link_local() {
        AddressClass::LinkLocal
    } else if address.is_multicast()
        || address.is_broadcast()
        || address.is_documentation()
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
    {
        AddressClass::Special
    } else {
        AddressClass::Public
    }
}

fn classify_v6(address: Ipv6Addr) -> AddressClass {
    // Addresses that carry an IPv4 address are what that address is: mapped
    // (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    if let Some(v4) = address.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = address.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, high, low] = segments;
        return classify_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    if segments[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from(
            (u32::from(segments[1]) << 16) | u32::from(segments[2]),
        ));
    }
    if address.is_unspecified() {
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if segments[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if segments[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if address.is_multicast()
        // documentation 2001:db8::/32, Teredo 2001::/32 (hides an IPv4 address),
        // IPv4-compatible ::/96 (deprecated)
        || (segments[0] == 0x2001 && (segments[1] == 0x0db8 || segments[1] == 0))
        || segments[..6] == [0; 6]
    {
        AddressClass::Special
    } else {
        AddressClass::Public
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("the URL must start with http:// or https://")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "{host} resolves to {address}, a {class} address; {mode} mode does not send webhooks there",
        class = class.name(),
        mode = if *livemode { "live" } else { "test" }
    )]
    Address {
        host: String,
        address: IpAddr,
        class: AddressClass,
        livemode: bool,
    },
    #[error("{host} could not be resolved: {reason}")]
    Unresolved { host: String, reason: String },
}

/// Turns a host name into addresses. The system's resolver in production; a table in tests
/// (a host that resolves to a public address when the endpoint is created and to a private
/// one at delivery).
pub trait HostLookup: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (getaddrinfo, off the async threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    }
}

/// Checks webhook URLs against the rules above.
#[derive(Clone)]
pub struct UrlGuard {
    lookup: Arc<dyn HostLookup>,
}

impl Default for UrlGuard {
    fn default() -> Self {
        Self::new(Arc::new(SystemLookup))
    }
}

impl std::fmt::Debug for UrlGuard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("UrlGuard")
    }
}

fn parse(url: &str) -> Result<Url, UrlRefused> {
    let parsed = Url::parse(url).map_err(|error| UrlRefused::Invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlRefused::Scheme);
    }
    Ok(parsed)
}

fn check_address(host: &str, address: IpAddr, livemode: bool) -> Result<(), UrlRefused> {
    let class = classify(address);
    if class.allowed(livemode) {
        Ok(())
    } else {
        Err(UrlRefused::Address {
            host: host.to_string(),
            address,
            class,
            livemode,
        })
    }
}

/// `Some(address)` for an IP-literal host.
fn literal(url: &Url) -> Result<Option<IpAddr>, UrlRefused> {
    match url.host() {
        None => Err(UrlRefused::NoHost),
        Some(Host::Ipv4(v4)) => Ok(Some(IpAddr::V4(v4))),
        Some(Host::Ipv6(v6)) => Ok(Some(IpAddr::V6(v6))),
        Some(Host::Domain(_)) => Ok(None),
    }
}

impl UrlGuard {
    pub fn new(lookup: Arc<dyn HostLookup>) -> Self {
        Self { lookup }
    }

    /// For the API, when an endpoint's URL is set: the URL parses, is http(s), and every
    /// address its host resolves to now is allowed in this mode. A host that does not
    /// resolve (yet) is accepted: every delivery checks again.
    pub async fn check(&self, url: &str, livemode: bool) -> Result<Url, UrlRefused> {
        let parsed = parse(url)?;
        let host = match parsed.host_str() {
            Some(host) => host.to_string(),
            None => return Err(UrlRefused::NoHost),
        };
        if let Some(address) = literal(&parsed)? {
            check_address(&host, address, livemode)?;
            return Ok(parsed);
        }
        let resolved = tokio::time::timeout(
            Duration::from_millis(LOOKUP_TIMEOUT_MS),
            self.lookup.lookup(&host),
        )
        .await;
        if let Ok(Ok(addresses)) = resolved {
            for address in addresses {
                check_address(&host, address, livemode)?;
            }
        }
        Ok(parsed)
    }

    /// Before each attempt: the URL parses and, if its host is an IP literal (which no
    /// resolver sees), that address is allowed. Host names are checked by
    /// [`GuardedResolver`] as the connection is made.
    pub fn check_literal(url: &str, livemode: bool) -> Result<Url, UrlRefused> {
        let parsed = parse(url)?;
        if let Some(address) = literal(&parsed)? {
            check_address(parsed.host_str().unwrap_or_default(), address, livemode)?;
        }
        Ok(parsed)
    }

    /// The resolver for a mode's HTTP client.
    pub fn resolver(&self, livemode: bool) -> GuardedResolver {
        GuardedResolver {
            lookup: self.lookup.clone(),
            livemode,
        }
    }
}

/// reqwest's resolver for webhook deliveries: resolves, refuses the host if any address is
/// refused, and hands back only checked addresses.
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<dyn HostLookup>,
    livemode: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let livemode = self.livemode;
        Box::pin(async move {
            let host = name.as_str();
            let addresses = lookup.lookup(host).await.map_err(|error| {
                Box::new(UrlRefused::Unresolved {
                    host: host.to_string(),
                    reason: error.to_string(),
                }) as Box<dyn std::error::Error + Send + Sync>
            })?;
            let mut checked = Vec::with_capacity(addresses.len());
            for address in addresses {
                check_address(host, address, livemode).map_err(|refused| {
                    Box::new(refused) as Box<dyn std::error::Error + Send + Sync>
                })?;
                // reqwest puts the URL's port in.
                checked.push(SocketAddr::new(address, 0));
            }
            Ok(Box::new(checked.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal inside a failed request's error chain, if that is why it failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a UrlRefused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<UrlRefused>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(address: &str) -> AddressClass {
        classify(address.parse().unwrap())
    }

    #[test]
    fn addresses_are_classified() {
        for (address, expected) in [
            ("93.184.216.34", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.9.9.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.100.100.200", AddressClass::Private),
            ("fd00::1", AddressClass::Private),
            ("fd00:ec2::254", AddressClass::Private),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Special),
            ("255.255.255.255", AddressClass::Special),
            ("240.0.0.1", AddressClass::Special),
            ("ff02::1", AddressClass::Special),
            ("2001:db8::1", AddressClass::Special),
        ] {
            assert_eq!(class(address), expected, "{address}");
        }
    }

    #[test]
    fn live_mode_allows_public_addresses_only_and_test_mode_adds_loopback_and_private() {
        for class in [
            AddressClass::Loopback,
            AddressClass::Private,
            AddressClass::LinkLocal,
            AddressClass::Unspecified,
            AddressClass::Special,
        ] {
            assert!(!class.allowed(true), "{class:?}");
        }
        assert!(AddressClass::Public.allowed(true));
        assert!(AddressClass::Loopback.allowed(false));
        assert!(AddressClass::Private.allowed(false));
        assert!(!AddressClass::LinkLocal.allowed(false));
    }

    #[test]
    fn literals_in_every_spelling_are_checked() {
        for url in [
            "http://127.0.0.1/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:7f00:1]/hook",
            "https://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(
                    UrlGuard::check_literal(url, true),
                    Err(UrlRefused::Address { .. })
                ),
                "{url}"
            );
        }
        assert!(UrlGuard::check_literal("http://127.0.0.1:9/hook", false).is_ok());
        assert!(UrlGuard::check_literal("http://169.254.169.254/", false).is_err());
        assert_eq!(
            UrlGuard::check_literal("ftp://example.com/", false),
            Err(UrlRefused::Scheme)
        );
        assert!(UrlGuard::check_literal("https://example.com/hook", true).is_ok());
    }
}

//! `hoard://` URLs: stable names for a service, zone, shard or object.
//!
//! Form: `hoard://HOST:PORT/SERVICE[/ZONE[/SHARD[/OBJECT]]]`, where HOST is a
//! DNS name, an IPv4 address or a bracketed IPv6 address, PORT is explicit,
//! SERVICE and ZONE follow the [`ZoneId`] naming rules and SHARD
//! and OBJECT are decimal `u64`s. Nothing needs escaping, so parsing and
//! display round-trip exactly. Parse errors say which part is wrong and where.

use std::fmt;
use std::str::FromStr;

use crate::ids::{NameError, ObjectId, ShardId, ZoneId, validate_name};

const SCHEME: &str = "hoard://";

/// A parsed `hoard://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HoardUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Service name (`world`, `arena`, ...).
    pub service: String,
    /// Zone, if the URL names a zone or something inside one.
    pub zone: Option<ZoneId>,
    /// Shard, if the URL names a shard or an object (requires `zone`).
    pub shard: Option<ShardId>,
    /// Object, if the URL names one (requires `shard`).
    pub object: Option<ObjectId>,
}

/// Why a string is not a `hoard://` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is missing or not `hoard://`.
    #[error("url must start with \"hoard://\"")]
    Scheme,
    /// The host is empty or holds characters a host cannot.
    #[error("bad host {0:?}: expected a dns name, an ipv4 address or a bracketed ipv6 address")]
    Host(String),
    /// The `:PORT` part is missing.
    #[error("missing port after host {0:?} (write host:port)")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    /// The service name is missing.
    #[error("missing service name after host:port")]
    MissingService,
    /// The service name breaks the naming rules.
    #[error("bad service name: {0}")]
    Service(NameError),
    /// The zone name breaks the naming rules.
    #[error("bad zone name: {0}")]
    Zone(NameError),
    /// The shard is not a decimal u64.
    #[error("bad shard {0:?}: expected a decimal number")]
    Shard(String),
    /// The object is not a decimal u64.
    #[error("bad object {0:?}: expected a decimal number")]
    Object(String),
    /// More path segments than service/zone/shard/object, or an empty one.
    #[error("unexpected path segment {0:?}: a url has at most service/zone/shard/object")]
    ExtraSegment(String),
}

impl HoardUrl {
    /// The URL of a service.
    pub fn service(host: impl Into<String>, port: u16, service: impl Into<String>) -> HoardUrl {
        HoardUrl {
            host: host.into(),
            port,
            service: service.into(),
            zone: None,
            shard: None,
            object: None,
        }
    }

    /// This URL narrowed to an object in a shard of a zone.
    #[must_use]
    pub fn object(&self, zone: ZoneId, shard: ShardId, object: ObjectId) -> HoardUrl {
        HoardUrl {
            zone: Some(zone),
            shard: Some(shard),
            object: Some(object),
            ..self.clone()
        }
    }

    /// This URL narrowed to a shard of a zone.
    #[must_use]
    pub fn shard(&self, zone: ZoneId, shard: ShardId) -> HoardUrl {
        HoardUrl {
            zone: Some(zone),
            shard: Some(shard),
            object: None,
            ..self.clone()
        }
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl FromStr for HoardUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(SCHEME).ok_or(UrlError::Scheme)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| UrlError::Host(authority.to_owned()))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Host(addr.to_owned()));
            }
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| UrlError::MissingPort(addr.to_owned()))?;
            (addr, port)
        } else {
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| UrlError::MissingPort(authority.to_owned()))?;
            if !valid_host(host) {
                return Err(UrlError::Host(host.to_owned()));
            }
            (host, port)
        };
        let port: u16 = match port.parse() {
            Ok(p) if p != 0 && !port.starts_with('+') && !port.starts_with('0') => p,
            _ => return Err(UrlError::Port(port.to_owned())),
        };
        let mut segments = path.split('/');
        let service = match segments.next() {
            Some("") | None => return Err(UrlError::MissingService),
            Some(s) => s,
        };
        validate_name(service).map_err(UrlError::Service)?;
        let mut url = HoardUrl::service(host, port, service);
        if let Some(zone) = segments.next() {
            url.zone = Some(ZoneId::new(zone).map_err(UrlError::Zone)?);
        }
        if let Some(shard) = segments.next() {
            url.shard = Some(
                parse_u64(shard)
                    .map(ShardId)
                    .ok_or_else(|| UrlError::Shard(shard.to_owned()))?,
            );
        }
        if let Some(object) = segments.next() {
            url.object = Some(
                parse_u64(object)
                    .map(ObjectId)
                    .ok_or_else(|| UrlError::Object(object.to_owned()))?,
            );
        }
        if let Some(extra) = segments.next() {
            return Err(UrlError::ExtraSegment(extra.to_owned()));
        }
        Ok(url)
    }
}

/// Strict decimal: digits only, no sign, no leading zeros (so display round-trips).
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for HoardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        write!(f, "/{}", self.service)?;
        if let Some(zone) = &self.zone {
            write!(f, "/{zone}")?;
            if let Some(shard) = self.shard {
                write!(f, "/{shard}")?;
                if let Some(object) = self.object {
                    write!(f, "/{object}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_depth() {
        let url: HoardUrl = "hoard://play.example.org:7878/world/meadow/12/345"
            .parse()
            .expect("valid");
        assert_eq!(url.host, "play.example.org");
        assert_eq!(url.port, 7878);
        assert_eq!(url.service, "world");
        assert_eq!(url.zone.as_ref().map(ZoneId::as_str), Some("meadow"));
        assert_eq!(url.shard, Some(ShardId(12)));
        assert_eq!(url.object, Some(ObjectId(345)));
        let v6: HoardUrl = "hoard://[::1]:9/arena".parse().expect("valid");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "hoard://[::1]:9/arena");
    }

    #[test]
    fn errors_name_the_wrong_part() {
        let cases: &[(&str, UrlError)] = &[
            ("http://h:1/w", UrlError::Scheme),
            ("hoard://h/w", UrlError::MissingPort("h".into())),
            ("hoard://h:0/w", UrlError::Port("0".into())),
            ("hoard://h:99999/w", UrlError::Port("99999".into())),
            ("hoard://h:1", UrlError::MissingService),
            ("hoard://h:1/", UrlError::MissingService),
            ("hoard://h_x:1/w", UrlError::Host("h_x".into())),
            ("hoard://[zz]:1/w", UrlError::Host("zz".into())),
            ("hoard://h:1/w/z/x1", UrlError::Shard("x1".into())),
            ("hoard://h:1/w/z/01", UrlError::Shard("01".into())),
            ("hoard://h:1/w/z/1/-2", UrlError::Object("-2".into())),
            ("hoard://h:1/w/z/1/2/3", UrlError::ExtraSegment("3".into())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<HoardUrl>().as_ref(), Err(want), "{input}");
        }
        assert!(matches!("hoard://h:1/W".parse::<HoardUrl>(), Err(UrlError::Service(_))));
        assert!(matches!(
            "hoard://h:1/w/".parse::<HoardUrl>(),
            Err(UrlError::Zone(NameError::Empty))
        ));
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            service in "[a-z0-9_-]{1,10}",
            zone in proptest::option::of("[a-z0-9_-]{1,10}"),
            shard in proptest::option::of(proptest::num::u64::ANY),
            object in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let mut url = HoardUrl::service(host, port, service);
            if let Some(z) = zone {
                url.zone = Some(ZoneId::new(z).expect("generated valid"));
                if let Some(s) = shard {
                    url.shard = Some(ShardId(s));
                    url.object = object.map(ObjectId);
                }
            }
            let text = url.to_string();
            proptest::prop_assert_eq!(text.parse::<HoardUrl>(), Ok(url));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,60}") {
            let _ = s.parse::<HoardUrl>();
            let _ = format!("hoard://{s}").parse::<HoardUrl>();
        }
    }
}

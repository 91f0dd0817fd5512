//! Checks on values tenants send that the type system cannot express: DNS
//! names, resource names, version strings, server properties.

use std::collections::{BTreeMap, HashSet};

use crate::error::ApiError;

/// Hostnames per server: a handful of aliases, not a catalogue.
pub const MAX_HOSTNAMES: usize = 16;
/// server.properties entries and their sizes.
pub const MAX_PROPERTIES: usize = 200;
pub const MAX_PROPERTY_KEY_LEN: usize = 64;
pub const MAX_PROPERTY_VALUE_LEN: usize = 1024;
/// Names become Kubernetes object names and DNS labels: 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// A hostname as players type it, normalised: lower case, no trailing dot.
/// Rules: at most 253 characters, at least two labels, each 1–63 of
/// `a-z0-9-` not starting or ending with `-`, and a top-level label that is
/// not all digits (so an IP address is not a hostname). Wildcards are not
/// accepted from tenants: `*.example.com` would capture other tenants' names.
pub fn hostname(field: &str, raw: &str) -> Result<String, ApiError> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(ApiError::invalid(field, format!("`{raw}` is not a valid hostname: {why}")));
    if name.is_empty() || name.len() > 253 {
        return bad("it must be 1 to 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels (e.g. mc.example.com)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return bad("the last label cannot be numeric");
    }
    Ok(name)
}

/// A list of hostnames: 1 to [`MAX_HOSTNAMES`], valid, no duplicates.
pub fn hostnames(field: &str, raw: &[String]) -> Result<Vec<String>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_HOSTNAMES {
        return Err(ApiError::invalid(field, format!("give 1 to {MAX_HOSTNAMES} hostnames")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let name = hostname(&f, h)?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::invalid(f, format!("`{name}` is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// A resource name (servers, plans, tenants): 1–63 of `a-z0-9-`, starting and
/// ending with a letter or digit — a valid Kubernetes name and DNS label.
pub fn name(field: &str, raw: &str) -> Result<(), ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_NAME_LEN
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 63 lower-case letters, digits or '-', not starting or ending with '-'",
        ))
    }
}

/// A Minecraft version (`1.21.4`, `24w14a`, `latest`): short, no spaces.
pub fn version(field: &str, raw: &str) -> Result<(), ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    if ok { Ok(()) } else { Err(ApiError::invalid(field, "must be 1 to 32 letters, digits, '.', '-', '_' or '+'")) }
}

/// server.properties entries: keys as Mojang spells them (`max-players`,
/// `query.port`), single-line values (a newline would inject another key).
pub fn properties(field: &str, props: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if props.len() > MAX_PROPERTIES {
        return Err(ApiError::invalid(field, format!("at most {MAX_PROPERTIES} properties")));
    }
    for (key, value) in props {
        let f = format!("{field}.{key}");
        let key_ok = !key.is_empty()
            && key.len() <= MAX_PROPERTY_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'));
        if !key_ok {
            return Err(ApiError::invalid(f, "property names are 1 to 64 of a-z, 0-9, '-', '.', '_'"));
        }
        if value.len() > MAX_PROPERTY_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(ApiError::invalid(f, "values are single-line and at most 1024 bytes"));
        }
    }
    Ok(())
}

/// A plugin download URL: `https://` with a host and no credentials, at most
/// 2048 bytes. IP-literal hosts in loopback, private or link-local ranges are
/// refused here already; the downloader checks resolved addresses again (a
/// name can point anywhere), which is the real SSRF guard.
pub fn download_url(field: &str, raw: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::invalid(field, why.to_owned()));
    if raw.len() > 2048 {
        return bad("at most 2048 bytes");
    }
    let Ok(url) = url::Url::parse(raw) else { return bad("not a valid URL") };
    if url.scheme() != "https" {
        return bad("only https:// URLs are allowed");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials in URLs are not allowed");
    }
    let internal = match url.host() {
        None => return bad("the URL needs a host"),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast()
        }
        Some(url::Host::Ipv6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || ip.to_ipv4_mapped().is_some()
        }
    };
    if internal {
        return bad("downloads from loopback, private or link-local addresses are not allowed");
    }
    Ok(())
}

/// A number within bounds.
pub fn range(field: &str, value: u32, min: u32, max: u32) -> Result<(), ApiError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, format!("must be between {min} and {max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_normalised_and_checked() {
        assert_eq!(hostname("h", "Survival.ACME.example.").ok().as_deref(), Some("survival.acme.example"));
        for bad in ["", "localhost", "a..b", "-a.b", "a-.b", "a_b.c", "*.acme.example", "1.2.3.4", "a b.c", "ä.de"] {
            assert!(hostname("h", bad).is_err(), "{bad}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(hostname("h", &long).is_err());
        assert!(hostname("h", "mc1.example.com").is_ok());
        assert!(hostnames("h", &["a.example".into(), "A.example".into()]).is_err());
        assert!(hostnames("h", &[]).is_err());
    }

    #[test]
    fn download_urls() {
        assert!(download_url("u", "https://cdn.example.com/x.jar").is_ok());
        for bad in [
            "http://cdn.example.com/x.jar",
            "https://user:pw@cdn.example.com/x.jar",
            "https://127.0.0.1/x.jar",
            "https://10.1.2.3/x.jar",
            "https://169.254.169.254/latest",
            "https://[::1]/x.jar",
            "https://[fd00::1]/x.jar",
            "https://[::ffff:127.0.0.1]/x.jar",
            "https://localhost/x.jar",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(download_url("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_versions_properties() {
        assert!(name("n", "survival-1").is_ok());
        assert!(name("n", "Survival").is_err());
        assert!(name("n", "-x").is_err());
        assert!(version("v", "1.21.4").is_ok());
        assert!(version("v", "1.21 4").is_err());
        let mut p = BTreeMap::new();
        p.insert("motd".to_owned(), "hi".to_owned());
        assert!(properties("p", &p).is_ok());
        p.insert("motd".to_owned(), "hi\nop=me".to_owned());
        assert!(properties("p", &p).is_err());
    }
}

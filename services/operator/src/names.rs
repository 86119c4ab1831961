//! Syntax checks for the names and addresses Kubernetes accepts: DNS labels and subdomains,
//! Secret keys, CIDRs. Each returns a reason that can be shown to the user as is.

use std::net::IpAddr;

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', alphanumeric at both ends.
pub fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!("{value:?} is longer than 63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !value.chars().all(ok_char) || value.starts_with('-') || value.ends_with('-') {
        return Err(format!(
            "{value:?} must consist of lowercase letters, digits and '-', and start and end \
             with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    for label in value.split('.') {
        dns_label(label).map_err(|_| {
            format!(
                "{value:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.', \
                 e.g. tenant-a-llm-keys)"
            )
        })?;
    }
    Ok(())
}

/// A Secret data key: letters, digits, '-', '_' and '.'.
pub fn secret_key(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.len() > 253 || !value.chars().all(ok_char) {
        return Err(format!(
            "{value:?} must consist of letters, digits, '-', '_' and '.' (at most 253)"
        ));
    }
    Ok(())
}

/// An IPv4 or IPv6 CIDR in canonical form (no host bits set), e.g. `10.0.0.0/8`.
pub fn cidr(value: &str) -> Result<(), String> {
    let invalid = || format!("{value:?} is not a CIDR (expected e.g. 10.0.0.0/8 or 2001:db8::/32)");
    let (address, prefix) = value.split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address.parse().map_err(|_| invalid())?;
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    let (bits, width) = match address {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if prefix > width {
        return Err(format!("{value:?} has a prefix longer than {width} bits"));
    }
    let host_mask = 1u128
        .checked_shl(width - prefix)
        .map_or(u128::MAX, |v| v - 1);
    if bits & host_mask != 0 {
        let network = bits & !host_mask;
        let network = match address {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(network as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(network)),
        };
        return Err(format!(
            "{value:?} has host bits set; did you mean {network}/{prefix}?"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(dns_label("acme").is_ok());
        assert!(dns_label("tenant-a1").is_ok());
        for bad in ["", "Acme", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_subdomains() {
        assert!(dns_subdomain("tenant-a-llm-keys").is_ok());
        assert!(dns_subdomain("keys.acme").is_ok());
        for bad in ["", "a..b", ".a", "A", "a_b"] {
            assert!(dns_subdomain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secret_keys() {
        assert!(secret_key("OPENAI_API_KEY").is_ok());
        assert!(secret_key("api-key.txt").is_ok());
        assert!(secret_key("").is_err());
        assert!(secret_key("a/b").is_err());
    }

    #[test]
    fn cidrs() {
        for good in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "192.168.1.7/32",
            "2001:db8::/32",
            "::/0",
        ] {
            assert_eq!(cidr(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/",
            "::/129",
        ] {
            assert!(cidr(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            cidr("10.1.2.3/8").unwrap_err(),
            "\"10.1.2.3/8\" has host bits set; did you mean 10.0.0.0/8?"
        );
    }
}

//! Kubernetes resource quantities: parsing the tenant's CPU and memory limits ("2", "500m",
//! "4Gi") into milli-CPUs and bytes, and writing sums back as canonical quantities.
//!
//! Plain decimal numbers with a binary (Ki…Ei) or decimal (m, k, M…E) suffix are accepted;
//! exponent forms ("1e3") are rejected. Fractions round up, as Kubernetes does.

use std::fmt;

/// Why a string is not a usable quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a Kubernetes quantity (expected e.g. {1})")]
    Malformed(String, &'static str),
    #[error("{0:?} must be greater than zero")]
    Zero(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a CPU quantity into millicores: "2" → 2000, "500m" → 500, "1.5" → 1500.
pub fn parse_cpu_millis(raw: &str) -> Result<u64, Error> {
    parse(raw, 1000, "2 or 500m")
}

/// Parses a memory quantity into bytes: "4Gi" → 4294967296, "512Mi", "1G", "1000".
pub fn parse_bytes(raw: &str) -> Result<u64, Error> {
    parse(raw, 1, "4Gi or 512Mi")
}

/// `unit` scales the base unit (1000 for millicores); the result rounds up.
fn parse(raw: &str, unit: u128, example: &'static str) -> Result<u64, Error> {
    let malformed = || Error::Malformed(raw.to_owned(), example);
    let text = raw;
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (num, den) = suffix_factor(suffix).ok_or_else(malformed)?;
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(malformed());
    }
    if frac_part.contains('.') || frac_part.len() > 9 {
        return Err(malformed());
    }
    let digits = format!("{int_part}{frac_part}");
    let too_large = || Error::TooLarge(raw.to_owned());
    let mantissa: u128 = digits.parse().map_err(|_| too_large())?;
    let scale = 10u128.pow(frac_part.len() as u32);
    let numerator = mantissa
        .checked_mul(num)
        .and_then(|v| v.checked_mul(unit))
        .ok_or_else(too_large)?;
    let value = numerator.div_ceil(scale * den);
    if value == 0 {
        return Err(Error::Zero(raw.to_owned()));
    }
    u64::try_from(value).map_err(|_| too_large())
}

/// The multiplier of a suffix as a fraction.
fn suffix_factor(suffix: &str) -> Option<(u128, u128)> {
    let binary = |power: u32| Some((1u128 << power, 1));
    let decimal = |power: u32| Some((10u128.pow(power), 1));
    match suffix {
        "" => Some((1, 1)),
        "m" => Some((1, 1000)),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => None,
    }
}

/// A CPU amount written canonically: whole cores as "20", otherwise millicores ("2500m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu(pub u64);

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A memory amount written with the largest exact binary suffix ("41Gi", "1536Mi", "1000").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SUFFIXES: [(&str, u32); 6] = [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ];
        for (suffix, power) in SUFFIXES {
            let unit = 1u64 << power;
            if self.0 != 0 && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.1"), Ok(100));
        assert_eq!(parse_cpu_millis("0.0001"), Ok(1), "fractions round up");
    }

    #[test]
    fn memory_quantities_become_bytes() {
        assert_eq!(parse_bytes("4Gi"), Ok(4 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("128k"), Ok(128_000));
    }

    #[test]
    fn bad_quantities_are_rejected_with_an_example() {
        for bad in ["", "4GB", "four", "1e3", "-1", "1.2.3", "Gi", "."] {
            let err = parse_bytes(bad).expect_err(bad);
            assert!(
                matches!(err, Error::Malformed(..)),
                "{bad:?} gave {err:?} instead of Malformed"
            );
        }
        assert_eq!(
            parse_cpu_millis("2 cores").unwrap_err().to_string(),
            "\"2 cores\" is not a Kubernetes quantity (expected e.g. 2 or 500m)"
        );
        assert_eq!(parse_cpu_millis("0"), Err(Error::Zero("0".into())));
        assert_eq!(parse_bytes("0Gi"), Err(Error::Zero("0Gi".into())));
        assert!(matches!(parse_bytes("99999Ei"), Err(Error::TooLarge(_))));
    }

    #[test]
    fn amounts_are_written_canonically() {
        assert_eq!(Cpu(20_000).to_string(), "20");
        assert_eq!(Cpu(20_500).to_string(), "20500m");
        assert_eq!(Bytes(41 << 30).to_string(), "41Gi");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536Mi");
        assert_eq!(Bytes(1000).to_string(), "1000");
        assert_eq!(Bytes(0).to_string(), "0");
    }
}

//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `40Ti`, `1e3`): validation and exact conversion to a
//! whole number of base units, without floating point.
//!
//! k8s-openapi's `Quantity` is only a string; the platform configuration checks quantities at startup with
//! [`parse`] and the StatefulSet generator turns the seed's memory limit into bytes for `GOMEMLIMIT`.

/// A parsed quantity: `numerator / denominator` base units (bytes for memory, cores for CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    numerator: u128,
    denominator: u128,
}

impl Parsed {
    /// The value rounded up to a whole number of base units (as Kubernetes' `Quantity.Value()` does).
    pub(crate) fn ceil(self) -> u128 {
        self.numerator.div_ceil(self.denominator)
    }

    /// Whether the quantity is zero.
    pub(crate) fn is_zero(self) -> bool {
        self.numerator == 0
    }
}

/// Parses a quantity in the Kubernetes canonical grammar (sign, digits with an optional fraction, then a binary
/// suffix `Ki..Ei`, a decimal suffix `m`, `k`, `M..E` or an exponent `e<n>`/`E<n>`). Negative quantities and
/// values too large for exact arithmetic are refused. The error says what is wrong, for messages.
pub(crate) fn parse(text: &str) -> Result<Parsed, String> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(format!(
            "invalid quantity {text:?}: negative quantities are not allowed"
        ));
    }
    let number_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!(
            "invalid quantity {text:?}: expected a number such as 500m, 2Gi or 1.5"
        ));
    }
    let too_large = || format!("invalid quantity {text:?}: too large");
    let mut numerator: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        numerator = numerator
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let fraction_digits = u32::try_from(fraction.len()).map_err(|_| too_large())?;
    let mut denominator = 10u128.checked_pow(fraction_digits).ok_or_else(too_large)?;
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        other => exponent(other).ok_or_else(|| {
            format!("invalid quantity {text:?}: unknown suffix {other:?} (use Ki, Mi, Gi, Ti, m, k, M, G, T or e<n>)")
        })??,
    };
    numerator = numerator.checked_mul(multiplier).ok_or_else(too_large)?;
    denominator = denominator.checked_mul(divisor).ok_or_else(too_large)?;
    Ok(Parsed {
        numerator,
        denominator,
    })
}

/// `e<n>` / `E<n>`: `Some(Ok((multiplier, divisor)))`, `Some(Err(..))` when out of range, `None` when not an
/// exponent at all.
fn exponent(suffix: &str) -> Option<Result<(u128, u128), String>> {
    let digits = suffix.strip_prefix(['e', 'E'])?;
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, digits.strip_prefix('+').unwrap_or(digits)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let power = digits
        .parse::<u32>()
        .ok()
        .filter(|p| *p <= 30)
        .and_then(|p| 10u128.checked_pow(p));
    Some(match power {
        Some(p) if negative => Ok((1, p)),
        Some(p) => Ok((p, 1)),
        None => Err(format!("invalid quantity exponent {suffix:?}: out of range")),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn binary_decimal_and_exponent_suffixes_convert_exactly() {
        assert_eq!(parse("2Gi").unwrap().ceil(), 2 << 30);
        assert_eq!(parse("40Ti").unwrap().ceil(), 40 << 40);
        assert_eq!(parse("1.5Gi").unwrap().ceil(), 3 << 29);
        assert_eq!(parse("500m").unwrap().ceil(), 1);
        assert_eq!(parse("2500m").unwrap().ceil(), 3);
        assert_eq!(parse("32").unwrap().ceil(), 32);
        assert_eq!(parse("1e3").unwrap().ceil(), 1000);
        assert_eq!(parse("+1k").unwrap().ceil(), 1000);
        assert_eq!(parse(".5").unwrap().ceil(), 1);
        assert!(parse("0").unwrap().is_zero());
    }

    #[test]
    fn malformed_quantities_are_refused_with_a_reason() {
        for bad in ["", "abc", "1Gb", "-1", "1..2", "Gi", "1 Gi", "1e99"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse("1Xi").unwrap_err().contains("unknown suffix"));
    }
}

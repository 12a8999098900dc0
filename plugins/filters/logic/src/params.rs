//! Parsing of the text parameters a filter receives in `configure`.
//!
//! Every error message names the parameter and the kind of value it expects, so the guests can
//! return it to the host as is.

/// Matches the given `(name, value)` pairs against the parameter names a filter knows.
///
/// Returns, for each name of `known` in order, the value given for it, or `None` when it was not
/// given (the caller then uses its default). A name that is not in `known`, or one given twice,
/// is an error naming the filter and listing the known names.
///
/// ```
/// use dinoflow_filter_logic::params::resolve;
/// let given = [("max", "3")];
/// assert_eq!(resolve("aspect-ratio", &["min", "max"], given), Ok(vec![None, Some("3")]));
/// assert!(resolve("aspect-ratio", &["min", "max"], [("mx", "3")]).unwrap_err().contains("'mx'"));
/// ```
pub fn resolve<'a>(
    filter: &str,
    known: &[&str],
    given: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Option<&'a str>>, String> {
    let mut values: Vec<Option<&'a str>> = vec![None; known.len()];
    for (name, value) in given {
        match known.iter().position(|k| *k == name) {
            Some(i) if values[i].is_some() => {
                return Err(format!(
                    "parameter '{name}' of filter '{filter}' is given twice"
                ));
            }
            Some(i) => values[i] = Some(value),
            None => {
                let list = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(format!(
                    "unknown parameter '{name}' for filter '{filter}' (its parameters: {list})"
                ));
            }
        }
    }
    Ok(values)
}

/// Parses an `integer` parameter that must fit in a `u32` (a whole number from 0 to 4294967295).
///
/// ```
/// use dinoflow_filter_logic::params::parse_u32;
/// assert_eq!(parse_u32("min_side", " 32 "), Ok(32));
/// assert!(parse_u32("min_side", "-1").unwrap_err().contains("min_side"));
/// ```
pub fn parse_u32(name: &str, value: &str) -> Result<u32, String> {
    value.trim().parse::<u32>().map_err(|_| {
        format!(
            "parameter '{name}' expects an integer (a whole number from 0 to {}), got \"{value}\"",
            u32::MAX
        )
    })
}

/// Parses an `integer` parameter that must fit in a `u64` (a whole number from 0 to 2⁶⁴ − 1).
///
/// ```
/// use dinoflow_filter_logic::params::parse_u64;
/// assert_eq!(parse_u64("min_bytes", "1024"), Ok(1024));
/// assert!(parse_u64("min_bytes", "1k").is_err());
/// ```
pub fn parse_u64(name: &str, value: &str) -> Result<u64, String> {
    value.trim().parse::<u64>().map_err(|_| {
        format!(
            "parameter '{name}' expects an integer (a whole number from 0 to {}), got \"{value}\"",
            u64::MAX
        )
    })
}

/// Parses a `number` parameter that must be 0 or more (a decimal such as `0.25`, `4` or `1e3`;
/// `inf` is accepted, `nan` is not).
///
/// ```
/// use dinoflow_filter_logic::params::parse_number;
/// assert_eq!(parse_number("min", "0.25"), Ok(0.25));
/// assert!(parse_number("min", "-0.5").unwrap_err().contains("'min'"));
/// ```
pub fn parse_number(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(x) if x >= 0.0 => Ok(x),
        _ => Err(format!(
            "parameter '{name}' expects a number of 0 or more (e.g. 0.25 or 4), got \"{value}\""
        )),
    }
}

/// The items of a `text-list` parameter: split at commas, trimmed, empty items skipped.
///
/// ```
/// let items: Vec<&str> = dinoflow_filter_logic::params::text_list(" jpeg, png,,").collect();
/// assert_eq!(items, ["jpeg", "png"]);
/// ```
pub fn text_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_matches_names() {
        let known = ["min_side", "min_pixels"];
        assert_eq!(resolve("min-size", &known, []), Ok(vec![None, None]));
        assert_eq!(
            resolve("min-size", &known, [("min_pixels", "5"), ("min_side", "7")]),
            Ok(vec![Some("7"), Some("5")])
        );
        let err = resolve("min-size", &known, [("min_sid", "7")]).unwrap_err();
        assert_eq!(
            err,
            "unknown parameter 'min_sid' for filter 'min-size' (its parameters: min_side, min_pixels)"
        );
        let err = resolve("min-size", &known, [("min_side", "7"), ("min_side", "8")]).unwrap_err();
        assert_eq!(
            err,
            "parameter 'min_side' of filter 'min-size' is given twice"
        );
        let err = resolve("keep-all", &[], [("x", "1")]).unwrap_err();
        assert!(err.ends_with("(its parameters: none)"), "{err}");
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u32("a", "0"), Ok(0));
        assert_eq!(parse_u32("a", "4294967295"), Ok(u32::MAX));
        assert!(parse_u32("a", "4294967296").is_err());
        assert!(parse_u32("a", "3.5").is_err());
        assert!(parse_u32("a", "").is_err());
        assert_eq!(parse_u64("b", "18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_u64("min_bytes", "-3").unwrap_err(),
            "parameter 'min_bytes' expects an integer (a whole number from 0 to \
             18446744073709551615), got \"-3\""
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("x", "4"), Ok(4.0));
        assert_eq!(parse_number("x", " 4.0 "), Ok(4.0));
        assert_eq!(parse_number("x", "1e3"), Ok(1000.0));
        assert_eq!(parse_number("x", "0"), Ok(0.0));
        assert_eq!(parse_number("x", "inf"), Ok(f64::INFINITY));
        assert!(parse_number("x", "nan").is_err());
        assert!(parse_number("x", "-1").is_err());
        assert_eq!(
            parse_number("min_std", "high").unwrap_err(),
            "parameter 'min_std' expects a number of 0 or more (e.g. 0.25 or 4), got \"high\""
        );
    }
}

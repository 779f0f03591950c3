//! Value parsers shared by the sections. Each returns the [`ValueProblem`] that the message
//! names after "is not a valid ...:"; the section's `KeySpec` supplies the rest.

use std::time::Duration;

use super::error::ValueProblem;

pub(super) fn parse_number(text: &str, min: u32, max: u32) -> Result<u32, ValueProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueProblem::NotANumber);
    }
    // All digits, so failure means overflow: out of range.
    let n = text
        .parse::<u32>()
        .map_err(|_| ValueProblem::OutOfRange { min, max })?;
    if n < min || n > max {
        return Err(ValueProblem::OutOfRange { min, max });
    }
    Ok(n)
}

pub(super) fn parse_u16(text: &str, min: u16, max: u16) -> Result<u16, ValueProblem> {
    let n = parse_number(text, u32::from(min), u32::from(max))?;
    u16::try_from(n).map_err(|_| ValueProblem::OutOfRange {
        min: u32::from(min),
        max: u32::from(max),
    })
}

/// true, yes, on, 1 / false, no, off, 0, in any case.
pub(super) fn parse_bool(text: &str) -> Result<bool, ValueProblem> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(ValueProblem::NotABool),
    }
}

pub(super) fn parse_secs(text: &str, min: u32, max: u32) -> Result<Duration, ValueProblem> {
    Ok(Duration::from_secs(u64::from(parse_number(
        text, min, max,
    )?)))
}

pub(super) fn parse_factor(text: &str, min: u32, max: u32) -> Result<f64, ValueProblem> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1;
    let v: f64 = if ok {
        text.parse().map_err(|_| ValueProblem::NotANumber)?
    } else {
        return Err(ValueProblem::NotANumber);
    };
    if v < f64::from(min) || v > f64::from(max) {
        return Err(ValueProblem::OutOfRange { min, max });
    }
    Ok(v)
}

pub(super) fn parse_choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, ValueProblem> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, v)| v)
        .ok_or(ValueProblem::NotAChoice)
}

pub(super) fn parse_fraction(text: &str) -> Result<f64, ValueProblem> {
    // Plain decimals only: "1e-2", "inf" and "NaN" parse as f64 but are no way to write a share.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(ValueProblem::NotAFraction);
    }
    let v: f64 = text.parse().map_err(|_| ValueProblem::NotAFraction)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(ValueProblem::FractionOutOfRange)
    }
}

//! Parsers for argument values, used as clap `value_parser`s so that bad input is refused
//! with a clear message before the daemon is contacted.

use aegis_api::MIN_MEMORY_MIB;

/// A memory size in MiB: `512` (MiB), `512M`, `512MiB`, `1G`, `1.5G`, `2GiB`, `524288K`.
/// Units are binary and case-insensitive; at least [`MIN_MEMORY_MIB`].
pub fn memory_mib(s: &str) -> Result<u32, String> {
    let hint = "give a size such as 512 (MiB), 512M or 1G";
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("memory must be a positive size; {hint}"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let kib_per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1024,
        "g" | "gb" | "gib" => 1024 * 1024,
        "k" | "kb" | "kib" => 1,
        other => return Err(format!("unknown unit '{other}'; {hint}")),
    };
    let kib = scaled(number, kib_per_unit).ok_or_else(|| format!("not a size; {hint}"))?;
    if kib % 1024 != 0 {
        return Err(format!("memory must be a whole number of MiB; {hint}"));
    }
    let mib = u32::try_from(kib / 1024).map_err(|_| format!("memory size is too large; {hint}"))?;
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "memory must be at least {MIN_MEMORY_MIB} MiB (got {mib} MiB); {hint}"
        ));
    }
    Ok(mib)
}

/// `number * unit`, where `number` may have a decimal fraction, exactly; `None` when it is
/// not a number, overflows, or does not give a whole count of `unit`'s base.
fn scaled(number: &str, unit: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let denominator = 10u64.pow(u32::try_from(frac.len()).ok()?);
    let frac_scaled = frac_value.checked_mul(unit)?;
    if frac_scaled % denominator != 0 {
        return None;
    }
    whole
        .checked_mul(unit)?
        .checked_add(frac_scaled / denominator)
}

/// A duration in whole seconds: `90` (seconds), `30s`, `5m`, `1h`, `2d`, `1h30m`.
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let hint = "give a duration such as 30s, 5m, 1h30m or a number of seconds";
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("a duration cannot be negative; {hint}"));
    }
    if s.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let total = if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map_err(|_| format!("duration is too large; {hint}"))?
    } else {
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("'{s}' is not a duration; {hint}"));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration is too large; {hint}"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let seconds_per_unit = match &rest[..unit_len] {
                "s" | "sec" | "secs" => 1,
                "m" | "min" | "mins" => 60,
                "h" | "hr" | "hrs" => 3600,
                "d" => 86_400,
                "" => return Err(format!("'{s}' lacks a unit after {value}; {hint}")),
                unit if unit.starts_with('.') => {
                    return Err(format!("use whole numbers (90m rather than 1.5h); {hint}"))
                }
                unit => return Err(format!("unknown unit '{unit}'; {hint}")),
            };
            rest = &rest[unit_len..];
            total = value
                .checked_mul(seconds_per_unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration is too large; {hint}"))?;
        }
        total
    };
    if total == 0 {
        return Err("a timeout must be at least 1s; leave --timeout out for no limit".into());
    }
    Ok(total)
}

/// `KEY=VALUE`, or `KEY` alone to pass this environment's value of `KEY` on.
pub fn env_pair(s: &str) -> Result<(String, String), String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (s, None),
    };
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{key}' is not a variable name: use letters, digits and '_', not starting with a \
             digit (KEY=VALUE)"
        ));
    }
    let value = match value {
        Some(v) => v,
        None => std::env::var(key).map_err(|_| {
            format!("{key} is not set in this environment; give its value as {key}=VALUE")
        })?,
    };
    if value.contains('\0') {
        return Err(format!("the value of {key} contains a NUL byte"));
    }
    Ok((key.to_string(), value))
}

/// A vCPU count, at least 1.
pub fn vcpus(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("a VM needs at least 1 vCPU".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("give a whole number of vCPUs, such as 2".into()),
    }
}

/// An absolute path inside the guest.
pub fn guest_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "'{s}' is not an absolute guest path; give one starting with /"
        ));
    }
    if s.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_mib("512"), Ok(512));
        assert_eq!(memory_mib("512M"), Ok(512));
        assert_eq!(memory_mib("512mb"), Ok(512));
        assert_eq!(memory_mib("512MiB"), Ok(512));
        assert_eq!(memory_mib("1G"), Ok(1024));
        assert_eq!(memory_mib("1.5g"), Ok(1536));
        assert_eq!(memory_mib("2GiB"), Ok(2048));
        assert_eq!(memory_mib("131072k"), Ok(128));
        assert_eq!(memory_mib(" 64 "), Ok(64));
    }

    #[test]
    fn bad_memory_sizes_say_why() {
        for (input, why) in [
            ("0", "at least 64 MiB"),
            ("0G", "at least 64 MiB"),
            ("63", "at least 64 MiB"),
            ("-512", "positive"),
            ("-1G", "positive"),
            ("", "not a size"),
            ("G", "not a size"),
            ("1..5G", "not a size"),
            ("12T", "unknown unit 't'"),
            ("1.0001G", "not a size"),
            ("100K", "whole number of MiB"),
            ("99999999999G", "too large"),
            ("9999999G", "too large"),
        ] {
            let err = memory_mib(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("90"), Ok(90));
        assert_eq!(duration_secs("30s"), Ok(30));
        assert_eq!(duration_secs("5m"), Ok(300));
        assert_eq!(duration_secs("1h"), Ok(3600));
        assert_eq!(duration_secs("1h30m"), Ok(5400));
        assert_eq!(duration_secs("2d"), Ok(172_800));
        assert_eq!(duration_secs("10min"), Ok(600));
    }

    #[test]
    fn bad_durations_say_why() {
        for (input, why) in [
            ("0", "at least 1s"),
            ("0s", "at least 1s"),
            ("-5", "negative"),
            ("", "empty"),
            ("5x", "unknown unit 'x'"),
            ("1h30", "lacks a unit"),
            ("1.5h", "whole numbers"),
            ("h", "not a duration"),
            ("99999999999999999999", "too large"),
            ("999999999999999999d", "too large"),
        ] {
            let err = duration_secs(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn env_pairs() {
        assert_eq!(env_pair("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(env_pair("_X=a=b"), Ok(("_X".into(), "a=b".into())));
        assert_eq!(env_pair("EMPTY="), Ok(("EMPTY".into(), String::new())));
        assert!(env_pair("=1").unwrap_err().contains("not a variable name"));
        assert!(env_pair("1A=1")
            .unwrap_err()
            .contains("not a variable name"));
        assert!(env_pair("A-B=1")
            .unwrap_err()
            .contains("not a variable name"));
        assert!(env_pair("A=\0").unwrap_err().contains("NUL"));
    }

    #[test]
    fn env_key_alone_takes_the_value_from_here() {
        // PATH is set in any environment tests run in.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(env_pair("PATH"), Ok(("PATH".into(), path)));
        let err = env_pair("AEGIS_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(err.contains("is not set"), "{err}");
    }

    #[test]
    fn vcpus_and_guest_paths() {
        assert_eq!(vcpus("2"), Ok(2));
        assert!(vcpus("0").unwrap_err().contains("at least 1"));
        assert!(vcpus("-1").is_err());
        assert_eq!(guest_path("/out"), Ok("/out".into()));
        assert!(guest_path("out").unwrap_err().contains("absolute"));
    }
}

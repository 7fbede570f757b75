//! Parsers for argument values, used as clap `value_parser`s so that bad input is refused
//! with a clear message before the daemon is contacted.

use aegis_api::{IdlePolicy, PortProtocol, PortSpec, MIN_MEMORY_MIB};

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

/// A `--timeout`: a [`duration_or_zero`] of at least one second.
pub fn duration_secs(s: &str) -> Result<u64, String> {
    match duration_or_zero(s)? {
        0 => Err("a timeout must be at least 1s; leave --timeout out for no limit".into()),
        n => Ok(n),
    }
}

/// A serve-mode timer (`--pause-after`, `--terminate-after`, `--wake-timeout`): a
/// [`duration_or_zero`] of at least one second.
pub fn timer_secs(s: &str) -> Result<u64, String> {
    match duration_or_zero(s)? {
        0 => Err("it must be at least 1s; leave the option out for aegisd's default".into()),
        n => Ok(n),
    }
}

/// A duration in whole seconds: `90` (seconds), `30s`, `5m`, `1h`, `2d`, `1h30m`, or `0`.
fn duration_or_zero(s: &str) -> Result<u64, String> {
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
    Ok(total)
}

const EXPOSE_HINT: &str =
    "give GUEST[:PROTO] or HOST:GUEST[:PROTO], e.g. 8000, 80:http, 8080:80:http, 5432:tcp";

/// An `--expose` spec: `GUEST`, `GUEST:PROTO`, `HOST:GUEST` or `HOST:GUEST:PROTO`. The
/// protocol is `http` (default), `tcp`, `grpc` or `websocket` (`ws`); host port 0 (or none)
/// lets aegisd choose one.
pub fn port_spec(s: &str) -> Result<PortSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, guest, protocol) = match parts[..] {
        [guest] => (None, guest, None),
        [a, b] if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => (Some(a), b, None),
        [guest, protocol] => (None, guest, Some(protocol)),
        [host, guest, protocol] => (Some(host), guest, Some(protocol)),
        _ => return Err(format!("'{s}' has too many ':'; {EXPOSE_HINT}")),
    };
    let guest_port = match port_number(guest, "guest")? {
        0 => {
            return Err(
                "guest port 0 is not a port: give the port the app listens on in the \
                        guest, e.g. 8000 or 8000:http"
                    .into(),
            )
        }
        n => n,
    };
    let host_port = match host {
        Some(h) => Some(port_number(h, "host")?).filter(|&p| p != 0),
        None => None,
    };
    let protocol = match protocol {
        Some(p) => p
            .parse::<PortProtocol>()
            .map_err(|e| format!("{e}; {EXPOSE_HINT}"))?,
        None => PortProtocol::Http,
    };
    Ok(PortSpec {
        guest_port,
        host_port,
        protocol,
    })
}

fn port_number(s: &str, which: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err(format!("the {which} port is missing; {EXPOSE_HINT}"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a {which} port number; {EXPOSE_HINT}"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("{which} port {s} is out of range: ports go from 1 to 65535"))
}

/// Specs that cannot be served together: a guest port exposed twice, or a host port asked
/// for twice.
pub fn exposed_ports(specs: &[PortSpec]) -> Result<(), String> {
    for (i, spec) in specs.iter().enumerate() {
        for earlier in &specs[..i] {
            if earlier.guest_port == spec.guest_port {
                return Err(format!(
                    "invalid value '{}' for '--expose <SPEC>': guest port {} is already exposed \
                     by '{}'; expose each guest port once",
                    render_spec(spec),
                    spec.guest_port,
                    render_spec(earlier)
                ));
            }
            if spec.host_port.is_some() && earlier.host_port == spec.host_port {
                return Err(format!(
                    "invalid value '{}' for '--expose <SPEC>': host port {} is already used by \
                     '{}'; give each exposed port its own host port",
                    render_spec(spec),
                    spec.host_port.unwrap_or_default(),
                    render_spec(earlier)
                ));
            }
        }
    }
    Ok(())
}

/// A spec as `[HOST:]GUEST:PROTO`.
pub fn render_spec(spec: &PortSpec) -> String {
    match spec.host_port {
        Some(host) => format!("{host}:{}:{}", spec.guest_port, spec.protocol.as_str()),
        None => format!("{}:{}", spec.guest_port, spec.protocol.as_str()),
    }
}

/// `--idle-policy`: `on` or `idle`.
pub fn idle_policy(s: &str) -> Result<IdlePolicy, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" => Ok(IdlePolicy::On),
        "idle" => Ok(IdlePolicy::Idle),
        _ => Err(
            "use 'on' (open connections keep the VM awake) or 'idle' (only traffic does)".into(),
        ),
    }
}

/// An instance name: it is also the `Host` under which the instance's HTTP ports are
/// reached on the shared router port, so it has to be a host name label, in lower case.
pub fn instance_name(s: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !valid {
        return Err(format!(
            "'{s}' is not an instance name: use 1 to 63 lowercase letters, digits and '-', not \
             starting or ending with '-' (it is also a host name on the router)"
        ));
    }
    Ok(s.to_string())
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
    fn zero_is_refused_by_the_callers_that_need_time() {
        assert_eq!(duration_or_zero("0"), Ok(0));
        assert_eq!(duration_or_zero("0s"), Ok(0));
        assert_eq!(duration_or_zero("2m"), Ok(120));
        assert!(timer_secs("0").unwrap_err().contains("at least 1s"));
        assert!(timer_secs("0m").unwrap_err().contains("at least 1s"));
        assert_eq!(timer_secs("90s"), Ok(90));
        assert!(duration_or_zero("-1").unwrap_err().contains("negative"));
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

    fn spec(host: Option<u16>, guest: u16, protocol: PortProtocol) -> PortSpec {
        PortSpec {
            guest_port: guest,
            host_port: host,
            protocol,
        }
    }

    #[test]
    fn expose_specs() {
        use PortProtocol::*;
        for (input, want) in [
            ("8000", spec(None, 8000, Http)),
            ("80:http", spec(None, 80, Http)),
            ("5432:tcp", spec(None, 5432, Tcp)),
            ("50051:grpc", spec(None, 50051, Grpc)),
            ("8765:websocket", spec(None, 8765, Websocket)),
            ("8765:WS", spec(None, 8765, Websocket)),
            ("8080:80", spec(Some(8080), 80, Http)),
            ("8080:80:http", spec(Some(8080), 80, Http)),
            ("15432:5432:tcp", spec(Some(15432), 5432, Tcp)),
            ("0:80:http", spec(None, 80, Http)),
            ("65535:65535:tcp", spec(Some(65535), 65535, Tcp)),
        ] {
            assert_eq!(port_spec(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_expose_specs_say_why() {
        for (input, why) in [
            ("0", "guest port 0 is not a port"),
            ("0:tcp", "guest port 0 is not a port"),
            ("8080:0", "guest port 0 is not a port"),
            ("65536", "guest port 65536 is out of range"),
            ("70000:80", "host port 70000 is out of range"),
            ("80:udp", "unknown protocol 'udp'"),
            ("80:", "unknown protocol ''"),
            ("", "the guest port is missing"),
            (":80", "the host port is missing"),
            ("http", "'http' is not a guest port number"),
            ("-1", "'-1' is not a guest port number"),
            ("1:2:3:4", "too many ':'"),
            ("x:80:tcp", "'x' is not a host port number"),
        ] {
            let err = port_spec(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_guest_or_host_port_exposed_twice_is_refused() {
        use PortProtocol::*;
        assert_eq!(
            exposed_ports(&[spec(None, 80, Http), spec(Some(8080), 8080, Http)]),
            Ok(())
        );
        let err = exposed_ports(&[spec(None, 80, Http), spec(None, 80, Tcp)]).unwrap_err();
        assert!(
            err.contains("'80:tcp'")
                && err.contains("guest port 80 is already exposed by '80:http'"),
            "{err}"
        );
        let err =
            exposed_ports(&[spec(Some(9000), 80, Http), spec(Some(9000), 81, Tcp)]).unwrap_err();
        assert!(err.contains("host port 9000 is already used"), "{err}");
        // Assigned host ports never clash.
        assert_eq!(
            exposed_ports(&[spec(None, 80, Http), spec(None, 81, Tcp)]),
            Ok(())
        );
    }

    #[test]
    fn idle_policies_and_names() {
        assert_eq!(idle_policy("on"), Ok(IdlePolicy::On));
        assert_eq!(idle_policy("IDLE"), Ok(IdlePolicy::Idle));
        assert!(idle_policy("off").unwrap_err().contains("'on'"));
        assert_eq!(instance_name("web-1"), Ok("web-1".into()));
        assert_eq!(instance_name("api2"), Ok("api2".into()));
        for bad in [
            "",
            "-web",
            "web-",
            "Web",
            "a b",
            "a.b",
            "a_b",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(instance_name(bad).is_err(), "{bad:?}");
        }
    }
}

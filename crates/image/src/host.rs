//! Facts about the host that guest kernel arguments depend on.

use std::fs;

/// The host CPU frequency in kHz, from the first "cpu MHz" line of /proc/cpuinfo.
///
/// Under TCG the guest cannot calibrate its TSC and hangs early in boot; passing
/// `tsc_early_khz=<this>` on the kernel command line avoids that.
pub fn host_tsc_khz() -> Option<u64> {
    parse_cpuinfo_khz(&fs::read_to_string("/proc/cpuinfo").ok()?)
}

fn parse_cpuinfo_khz(cpuinfo: &str) -> Option<u64> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "cpu MHz" {
            return None;
        }
        let mhz: f64 = value.trim().parse().ok()?;
        (mhz.is_finite() && mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_mhz() {
        let info =
            "processor\t: 0\nmodel name\t: Some CPU\ncpu MHz\t\t: 2445.432\ncache size\t: 1 KB\n";
        assert_eq!(parse_cpuinfo_khz(info), Some(2_445_432));
        assert_eq!(parse_cpuinfo_khz("cpu MHz : 0\n"), None);
        assert_eq!(parse_cpuinfo_khz("flags : fpu\n"), None);
    }

    #[test]
    fn host_value_is_plausible_when_present() {
        if let Some(khz) = host_tsc_khz() {
            assert!((100_000..20_000_000).contains(&khz), "{khz}");
        }
    }
}

//! `SetClock`: the guest has no RTC, so its wall clock comes from the host.

use std::io;

/// Sets `CLOCK_REALTIME` to `unix_nanos` since the epoch.
pub(crate) fn set_realtime(unix_nanos: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_nanos / 1_000_000_000)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        // < 1e9, always fits.
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we pass and nothing else.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

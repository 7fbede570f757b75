//! A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` then thirteen 8-digit hex fields), the
//! NUL-terminated name padded to a multiple of 4, then the data padded to a multiple of 4.
//! The archive ends with an entry named `TRAILER!!!`.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
#[cfg(test)]
pub(crate) const S_IFLNK: u32 = 0o120_000;

/// Writes entries in order. All entries are owned by root with mtime 0, so the same input
/// always gives the same bytes.
pub(crate) struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data)
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[])
    }

    #[cfg(test)]
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Write the trailer and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, 0, (0, 0))?;
        // Pad the archive to 512 bytes like cpio(1) does; the kernel ignores the zeros.
        let pad = (512 - self.written % 512) % 512;
        self.write(&vec![0; pad as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid cpio entry name {name:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is larger than the 4 GiB a newc entry can hold"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, nlink, size, rdev)?;
        self.write(data)?;
        self.pad4()
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry name too long"))?;
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            size, 0, // devmajor
            0, // devminor
            rdev.0, rdev.1, namesize, 0, // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        debug_assert_eq!(header.len(), 110);
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad4()
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..pad as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// One parsed entry.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub mode: u32,
    pub nlink: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parse a newc archive up to its trailer (the tests' independent reader).
#[cfg(test)]
pub(crate) fn parse(mut bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    loop {
        if bytes.len() < 110 {
            return Err(format!("truncated header at offset {offset}"));
        }
        let header = std::str::from_utf8(&bytes[..110]).map_err(|e| e.to_string())?;
        if &header[..6] != MAGIC {
            return Err(format!("bad magic at offset {offset}"));
        }
        let field = |i: usize| {
            u32::from_str_radix(&header[6 + i * 8..14 + i * 8], 16).map_err(|e| e.to_string())
        };
        let (mode, nlink, size, rdev_major, rdev_minor, namesize) = (
            field(1)?,
            field(4)?,
            field(6)?,
            field(9)?,
            field(10)?,
            field(11)?,
        );
        let name_end = 110 + namesize as usize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size as usize;
        if bytes.len() < data_end {
            return Err(format!("truncated entry at offset {offset}"));
        }
        if bytes[name_end - 1] != 0 {
            return Err(format!("name not NUL-terminated at offset {offset}"));
        }
        let name = String::from_utf8_lossy(&bytes[110..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            nlink,
            rdev: (rdev_major, rdev_minor),
            data: bytes[data_start..data_end].to_vec(),
        });
        let next = data_end.next_multiple_of(4);
        offset += next;
        bytes = &bytes[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"hello, world").unwrap();
        w.symlink("sbin", "bin").unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_the_parser() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 0);
        let entries = parse(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "sbin", "empty"]);
        assert_eq!(entries[0].mode, 0o40755);
        assert_eq!(entries[0].nlink, 2);
        assert_eq!(entries[1].mode, 0o20600);
        assert_eq!(entries[1].rdev, (5, 1));
        assert_eq!(entries[2].mode, 0o100755);
        assert_eq!(entries[2].data, b"hello, world");
        assert_eq!(entries[3].mode, 0o120777);
        assert_eq!(entries[3].data, b"bin");
        assert!(entries[4].data.is_empty());
    }

    #[test]
    fn header_is_the_newc_layout() {
        let bytes = sample();
        // First entry "dev": ino 1, mode 040755, nlink 2, namesize 4.
        let h = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(
            h,
            "070701\
             00000001000041ED000000000000000000000002000000000000000000000000\
             00000000000000000000000000000004\
             00000000"
        );
        assert_eq!(&bytes[110..114], b"dev\0");
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/abs", 0o644, b"").is_err());
        assert!(w.file("", 0o644, b"").is_err());
    }

    #[test]
    fn cpio_tool_agrees_when_installed() {
        let Some(cpio) = crate::cmd::find_executable("cpio") else {
            eprintln!("cpio(1) not installed; parser round trip covers the format");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, sample()).unwrap();
        let out = std::process::Command::new(cpio)
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "dev\ndev/console\ninit\nsbin\nempty\n"
        );
    }
}

//! Task output to our own stdout and stderr, byte for byte.

use std::io::{self, Write};

use aegis_api::StreamName;

/// Writes each chunk as it arrives and flushes it: no line buffering, no re-encoding.
///
/// When a reader goes away (`aegis run ... | head -1`), further bytes for that stream are
/// dropped and the task is still followed to its end, so its exit code is not lost.
#[derive(Debug, Default)]
pub struct Sink {
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Sink {
    pub fn write(&mut self, stream: StreamName, data: &[u8]) -> io::Result<()> {
        match stream {
            StreamName::Stdout => write_to(&mut io::stdout().lock(), data, &mut self.stdout_closed),
            StreamName::Stderr => write_to(&mut io::stderr().lock(), data, &mut self.stderr_closed),
        }
    }
}

fn write_to(out: &mut impl Write, data: &[u8], closed: &mut bool) -> io::Result<()> {
    if *closed {
        return Ok(());
    }
    match out.write_all(data).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            *closed = true;
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_pass_unchanged() {
        let mut out = Vec::new();
        let mut closed = false;
        write_to(&mut out, b"a\0\xff", &mut closed).unwrap();
        write_to(&mut out, b"no newline", &mut closed).unwrap();
        assert_eq!(out, b"a\0\xffno newline");
    }

    #[test]
    fn a_closed_reader_is_not_an_error() {
        let mut closed = false;
        write_to(&mut Broken, b"x", &mut closed).unwrap();
        assert!(closed);
        write_to(&mut Broken, b"x", &mut closed).unwrap();
    }
}

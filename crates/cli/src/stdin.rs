//! Our stdin as the stdin of a guest command (`aegis run`, `aegis exec`), as `docker run -i`.

use std::io::IsTerminal;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncReadExt;

/// Whether to forward our stdin: always with `-i`; otherwise only when it is not a terminal
/// (`printf x | aegis run -- cat`), so that a command started from a shell does not take the
/// keyboard it was not asked to take.
pub fn wanted(interactive: bool) -> bool {
    interactive || !std::io::stdin().is_terminal()
}

/// Our stdin as it is read, chunk by chunk; it ends at our EOF (or a read error, which the
/// guest sees as EOF too).
pub fn chunks() -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(tokio::io::stdin(), |mut stdin| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Bytes::from(buf), stdin))
            }
        }
    })
}

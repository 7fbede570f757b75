//! Tar streams between the host and a guest, shared by the three places that move them: the
//! harness (a guest path sent to the host, an upload unpacked in the guest), aegisd (a task's
//! artifacts) and the CLI (`aegis cp`, both ways).
//!
//! - [`pack`]: a file or directory archived under the name the other side will see, links as
//!   links and never followed, device nodes and fifos as such, sockets left out.
//! - [`stays_inside`], [`link_stays_inside`]: the checks an unpacker of an untrusted archive
//!   makes on names and link targets before `tar`'s own `unpack_in`.
//! - [`ChunkReader`], [`ChunkWriter`]: tar works on blocking `Read`/`Write`, the streams are
//!   async: these carry bounded chunks through a channel between a blocking thread and the
//!   async side, so a slow reader throttles the writer instead of the archive piling up in
//!   memory, and a stream cut off before its end is an error, never a shorter archive.
//!
//! Each unpacker keeps its own policy (what the host keeps of device nodes, fifos and mode
//! bits differs between artifacts, `aegis cp` and the guest); see their modules.

mod chunks;
mod pack;
mod paths;

pub use chunks::{Chunk, ChunkReader, ChunkWriter, CHUNK};
pub use pack::{pack, PackError};
pub use paths::{link_stays_inside, stays_inside};

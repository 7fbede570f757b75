//! `aegis-harness`: the init (PID 1) of every Aegis microVM. See `init` and docs/HARNESS.md.

mod init;

fn main() {
    init::main()
}

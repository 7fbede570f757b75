//! What every command needs: the Aegis home and a client of its daemon.

use std::path::{Path, PathBuf};

use aegis_client::Client;

#[derive(Debug)]
pub struct Context {
    home: PathBuf,
    client: Client,
}

impl Context {
    pub fn new(home: PathBuf) -> Self {
        let client = Client::from_home(&home);
        Context { home, client }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `<home>/aegisd.log`, where `aegis up` sends the daemon's output.
    pub fn daemon_log(&self) -> PathBuf {
        self.home.join("aegisd.log")
    }

    /// `<home>/aegisd.pid`, written by the daemon.
    pub fn pid_file(&self) -> PathBuf {
        self.home.join(aegis_client::PID_FILE_NAME)
    }
}

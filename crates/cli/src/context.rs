//! What every command needs: the Aegis home and a client of its daemon.

use aegis_api::AegisHome;
use aegis_client::Client;

#[derive(Debug)]
pub struct Context {
    home: AegisHome,
    client: Client,
}

impl Context {
    pub fn new(home: AegisHome) -> Self {
        let client = Client::from_home(&home);
        Context { home, client }
    }

    pub fn home(&self) -> &AegisHome {
        &self.home
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

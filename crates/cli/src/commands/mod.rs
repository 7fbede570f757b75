//! One file per command.

pub mod app;
pub mod cp;
pub mod doctor;
pub mod down;
pub mod exec;
pub mod image;
pub mod instance;
pub mod lifecycle;
pub mod run;
pub mod setup;
pub mod status;
pub mod task;
pub mod up;
pub mod workspace;

/// Removes each of `names` with `remove`, printing each removed name on stdout and each
/// failure on stderr; the exit code is 125 if any failed (the others are still removed).
pub async fn remove_each<'a, F, Fut>(what: &str, names: &'a [String], remove: F) -> i32
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = aegis_client::Result<()>>,
{
    let mut code = 0;
    for name in names {
        match remove(name).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("aegis: cannot remove {what} {name}: {e}");
                code = crate::exit::AEGIS_ERROR;
            }
        }
    }
    code
}

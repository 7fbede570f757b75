//! Arbitrary bytes as the body of each JSON request the API takes, through the same
//! deserialisation and validation the handlers run: no input may panic, and whatever the
//! validation accepts must survive a serialise/parse round trip unchanged (what the daemon
//! records is what it checked).
//!
//! The first byte picks the request type; the rest is the body.

#![no_main]

use aegis_api::{
    CreateExec, CreateInstance, CreateLease, CreateTask, CreateWorkspace, PublishRelease,
    PullImage, RenewLease, ServeApp,
};
use aegisd::vm_request::HostLimits;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

const LIMITS: HostLimits = HostLimits {
    cpus: 2,
    memory_mib: 24 * 1024,
};

/// Parses `body` as `T`; when `check` accepts it, it must round-trip exactly.
fn exercise<T>(body: &[u8], check: impl Fn(&T) -> bool)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(req) = serde_json::from_slice::<T>(body) else {
        return;
    };
    if check(&req) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&req).expect("serialise"))
            .expect("what was accepted parses again");
        assert_eq!(again, req, "an accepted request changed in a round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 9 {
        0 => exercise::<CreateTask>(body, |r| aegisd::tasks::validate(r, &LIMITS).is_ok()),
        1 => exercise::<CreateInstance>(body, |r| aegisd::instances::validate(r, &LIMITS).is_ok()),
        2 => exercise::<CreateWorkspace>(body, |r| aegisd::workspaces::validate_name(&r.name).is_ok()),
        3 => exercise::<PullImage>(body, |r| aegis_oci_reference_ok(&r.reference)),
        4 => exercise::<PublishRelease>(body, |_| true),
        5 => exercise::<ServeApp>(body, |_| true),
        6 => exercise::<CreateExec>(body, |r| aegisd::instances::exec::validate(r).is_ok()),
        7 => exercise::<CreateLease>(body, |r| {
            aegis_api::check_lease_ttl(r.ttl_secs).is_ok()
                && r.holder.as_deref().is_none_or(|h| aegis_api::check_lease_holder(h).is_ok())
        }),
        _ => exercise::<RenewLease>(body, |r| {
            r.ttl_secs.is_none_or(|t| aegis_api::check_lease_ttl(t).is_ok())
        }),
    }
});

/// A reference the puller would accept; parsing it must never panic either.
fn aegis_oci_reference_ok(reference: &str) -> bool {
    aegis_oci::Reference::parse(reference).is_ok()
}

//! The committed `api/openapi.json` passes the reference validator (openapi-spec-validator,
//! Python). A missing validator fails the test rather than skipping it: an unchecked document
//! must not look checked. `scripts/deps.sh` installs it into a venv at [`VENV_PYTHON`];
//! `AEGIS_PYTHON` names another interpreter that has it.

use std::process::Command;

use aegis_testkit::python::{test_tools_python, VENV_PYTHON};

#[test]
fn committed_document_passes_openapi_spec_validator() {
    let document = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.json");
    let python = test_tools_python();
    let probe = Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output();
    let installed = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "openapi-spec-validator is not installed for {python}: run scripts/deps.sh (it \
         installs it into {VENV_PYTHON}), or `pip install openapi-spec-validator` and set \
         AEGIS_PYTHON to that interpreter ({probe:?})"
    );
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator", document])
        .output()
        .expect("run openapi_spec_validator");
    assert!(
        out.status.success(),
        "api/openapi.json is not a valid OpenAPI document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Resolving an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the guest's
//! `/etc/passwd` and `/etc/group`, as `docker run --user` does.

use std::fs;
use std::path::Path;

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The user's home directory from `/etc/passwd`, if the user is listed there.
    pub home: Option<String>,
}

/// Resolves `spec` under `root` (the guest's `/`). A numeric uid that is not in `/etc/passwd`
/// is fine (group = the uid's own number unless given), as with Docker; a name that is not
/// there is an error naming the file.
pub fn resolve(spec: &str, root: &Path) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("user {spec:?} is malformed: expected USER[:GROUP]"));
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    // name:password:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .find(|f| f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user));
    let (uid, default_gid, home) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("/etc/passwd has a bad uid for user {user:?}"))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("/etc/passwd has a bad gid for user {user:?}"))?,
            Some(f[5].to_string()).filter(|h| !h.is_empty()),
        ),
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => {
            return Err(format!(
                "user {user:?} is not in the image's /etc/passwd; use a numeric uid or add the user"
            ))
        }
    };
    let gid = match group {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("group {g:?} is not in the image's /etc/group; use a numeric gid")
                    })?
            }
        },
    };
    Ok(Identity { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        dir
    }

    #[test]
    fn names_numbers_and_groups() {
        let r = root();
        let id = resolve("app", r.path()).unwrap();
        assert_eq!(
            (id.uid, id.gid, id.home.as_deref()),
            (1000, 1001, Some("/home/app"))
        );
        assert_eq!(resolve("1000", r.path()).unwrap().gid, 1001);
        let id = resolve("4242", r.path()).unwrap();
        assert_eq!((id.uid, id.gid, id.home), (4242, 4242, None));
        assert_eq!(resolve("app:staff", r.path()).unwrap().gid, 50);
        assert_eq!(resolve("app:7", r.path()).unwrap().gid, 7);
        assert_eq!(resolve("root", r.path()).unwrap().uid, 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = root();
        assert!(resolve("ghost", r.path())
            .unwrap_err()
            .contains("/etc/passwd"));
        assert!(resolve("app:ghosts", r.path())
            .unwrap_err()
            .contains("/etc/group"));
        assert!(resolve(":", r.path()).unwrap_err().contains("malformed"));
        assert!(resolve("app:", r.path()).unwrap_err().contains("malformed"));
    }
}

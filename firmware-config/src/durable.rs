//! Writing a small file so that it is either the old one or the new one, whole, even across a
//! power cut: the bytes go to a temporary file beside it, are synced, and the temporary file
//! is renamed over the old one; then the folder is synced so the rename itself survives.
//!
//! Used for everything the services keep in a file of its own: bundle versions and the
//! highest applied, the outbox's sequence floor, secret keys, the CRL.

use std::io::Write;
use std::path::Path;

/// Who may read the file written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// As the process's umask leaves it.
    Default,
    /// The owner only (0600): keys and secrets.
    OwnerOnly,
}

/// Replaces `path` with `bytes`, durably (see the module's text).
pub fn write(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_secret_is_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("highest.json");
        write(&path, b"{\"gateway\":1}", Access::Default).unwrap();
        write(&path, b"{\"gateway\":2}", Access::Default).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"gateway\":2}");
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("highest.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("share.key");
            write(&key, &[7; 32], Access::OwnerOnly).unwrap();
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        // A folder that is not there: an error, not a panic.
        assert!(write(&dir.path().join("no/such/file"), b"x", Access::Default).is_err());
    }
}

//! Files and output directories, handled so that hier never loses or fakes a user's data:
//!
//! - every file hier reads goes through [`read_file`]: only regular files (a FIFO would block
//!   forever, a device such as `/dev/zero` never ends), read up to the length they had when
//!   opened and no further;
//! - an output directory is claimed with [`claim_out_dir`]: it must be new or empty (so a model
//!   or a run already there is never overwritten), and it stays locked while hier writes it;
//! - an output file is written with [`write_new`], which never replaces an existing file;
//! - a crash's leftovers (hier's own `.NAME.tmp-PID` files) are removed at the next start.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a path cannot be read or written as asked (carried inside an [`io::Error`], so that it
/// reaches the user through every error type that wraps I/O errors).
#[derive(Debug, Error)]
pub enum FileError {
    #[error("is {kind}, not a regular file; hier reads only regular files (or symlinks to them) — give the path of a regular file")]
    /// A directory, FIFO, device or socket: reading it could block or never end.
    NotRegular {
        /// What it is instead, e.g. `a FIFO (named pipe)`.
        kind: &'static str,
    },
    #[error(
        "is {len} bytes, more than the {limit} bytes allowed for this file; is it the right file?"
    )]
    /// Longer than the limit the caller set for this kind of file.
    TooLarge {
        /// Its length in bytes.
        len: u64,
        /// The most bytes allowed.
        limit: u64,
    },
    #[error("changed while it was read (expected {expected} bytes, read {read}); do not modify it while hier runs")]
    /// Its length changed between opening and reading.
    Changed {
        /// Length when opened.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    #[error("already exists; hier does not overwrite files — remove it or choose another --out")]
    /// An output file that is already there; hier never replaces one.
    Exists,
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> Self {
        let kind = match e {
            FileError::Exists => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// An output directory that cannot be written.
#[derive(Debug, Error)]
pub enum OutDirError {
    #[error("{path} is not empty (it holds {entries}); hier writes only into a new or empty directory, so that nothing there is overwritten — continue a training run there with `hier train --resume {path}`, or choose another --out")]
    /// The directory already holds something.
    NotEmpty {
        /// The directory.
        path: String,
        /// The first few entries' names, for the message.
        entries: String,
    },
    #[error("{path} exists and is not a directory; choose another --out")]
    /// The path exists and is a file (or something else), not a directory.
    NotADirectory {
        /// The path.
        path: String,
    },
    #[error("{path} is in use: another process (a running `hier train`?) holds its lock; wait for it to finish, or use another directory")]
    /// Another process holds the directory's lock.
    Locked {
        /// The directory.
        path: String,
    },
    #[error("{path}: {source}")]
    /// Creating, inspecting or locking the directory failed.
    Io {
        /// The path the error was met on.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

/// An error type with a variant for an I/O error met on a path (`Io { path, source }` in
/// hier's error types), so that one function, [`PathIoError::at`], attaches the path:
/// `fs::read(path).map_err(DataError::at(path))`.
pub trait PathIoError: Sized {
    /// The error for `source`, met on `path`.
    fn from_io(path: String, source: io::Error) -> Self;

    /// Maps an I/O error on `path` to this error type.
    fn at(path: &Path) -> impl Fn(io::Error) -> Self + Copy + '_ {
        move |source| Self::from_io(path.display().to_string(), source)
    }
}

impl PathIoError for OutDirError {
    fn from_io(path: String, source: io::Error) -> Self {
        OutDirError::Io { path, source }
    }
}

/// What kind of thing `meta` describes, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        match () {
            _ if t.is_fifo() => return "a FIFO (named pipe)",
            _ if t.is_char_device() => return "a character device",
            _ if t.is_block_device() => return "a block device",
            _ if t.is_socket() => return "a socket",
            _ => {}
        }
    }
    "not a regular file"
}

/// The metadata of `path` (symlinks followed) if it is a regular file. Checked *before* opening:
/// opening a FIFO for reading blocks until a writer appears.
pub fn regular_file_metadata(path: &Path) -> io::Result<Metadata> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            kind: kind_of(&meta),
        }
        .into());
    }
    Ok(meta)
}

/// Read the regular file `path` (at most `limit` bytes, if given). The opened file is checked
/// again (it may have been replaced since), and exactly its length at that moment is read.
pub fn read_file(path: &Path, limit: Option<u64>) -> io::Result<Vec<u8>> {
    regular_file_metadata(path)?;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            kind: kind_of(&meta),
        }
        .into());
    }
    let len = meta.len();
    if let Some(limit) = limit.filter(|&l| len > l) {
        return Err(FileError::TooLarge { len, limit }.into());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(FileError::Changed {
            expected: len,
            read: bytes.len() as u64,
        }
        .into());
    }
    Ok(bytes)
}

/// The most bytes a JSON file (a config, a checkpoint's state, a list of ids) may have.
pub const JSON_LIMIT: u64 = 1 << 30;

/// Read the regular file `path` as UTF-8 text (at most [`JSON_LIMIT`] bytes).
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_file(path, Some(JSON_LIMIT))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The temporary name [`write_atomic`] and [`write_new`] write `path` under first.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Write `bytes` to a temporary file beside `path`, flushed to disk; removed again on failure.
fn write_tmp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replace `path` with `bytes` so that a crash leaves either the old file or the new one, never
/// a torn one (for files hier owns: a model or run directory it has claimed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_tmp(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent(path));
    Ok(())
}

/// Check that `path` can be created as a new output file: nothing exists there (hier never
/// overwrites a user's file). Stale temporaries of an earlier crashed write of it are removed.
pub fn prepare_new_file(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileError::Exists.into());
    }
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) => remove_leftovers(parent(path), &[name], true),
        None => Ok(()),
    }
}

/// Move the complete file `tmp` to the new name `path`, refusing (and removing `tmp`) if a
/// file appeared at `path` meanwhile: a hard link never replaces an existing file.
pub fn publish_new(tmp: &Path, path: &Path) -> io::Result<()> {
    let linked = fs::hard_link(tmp, path);
    let _ = fs::remove_file(tmp);
    match linked {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(FileError::Exists.into()),
        result => result.map(|()| sync_dir(parent(path))),
    }
}

/// Create `path` with `bytes`, complete or not at all, refusing if anything exists at `path`.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    prepare_new_file(path)?;
    let tmp = write_tmp(path, bytes)?;
    publish_new(&tmp, path)
}

/// Whether process `pid` is running (on systems without `/proc`, assume it is).
fn process_alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
}

/// The PID in a temporary name `.{name}.tmp-{PID}` of one of `names`.
fn leftover_pid(entry: &str, names: &[&str]) -> Option<u32> {
    let rest = entry.strip_prefix('.')?;
    names.iter().find_map(|name| {
        let pid = rest.strip_prefix(*name)?.strip_prefix(".tmp-")?;
        pid.parse().ok()
    })
}

/// Remove the temporaries `.{name}.tmp-{PID}` that a crash left in `dir` for the files `names`
/// (only those: never a user's file). With `only_dead`, those of running processes are kept;
/// without it, the caller holds `dir`'s lock, so no other writer can be using them.
pub fn remove_leftovers(dir: &Path, names: &[&str], only_dead: bool) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| leftover_pid(n, names)) else {
            continue;
        };
        if entry.file_type()?.is_file() && !(only_dead && process_alive(pid)) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// An exclusive lock on a directory, held while hier writes into it (released on drop, and by
/// the system when the process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Lock the existing directory `dir`, or fail at once if another process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, OutDirError> {
    let handle = File::open(dir).map_err(OutDirError::at(dir))?;
    if !handle.metadata().map_err(OutDirError::at(dir))?.is_dir() {
        return Err(OutDirError::NotADirectory {
            path: dir.display().to_string(),
        });
    }
    match handle.try_lock() {
        Ok(()) => Ok(DirLock { _dir: handle }),
        Err(fs::TryLockError::WouldBlock) => Err(OutDirError::Locked {
            path: dir.display().to_string(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(OutDirError::at(dir)(e)),
    }
}

/// Claim `dir` as a new output directory: create it if it does not exist, lock it, remove
/// hier's own leftovers of a crashed write of `own_files`, and refuse it unless it is empty.
/// Every command that writes a directory starts here.
pub fn claim_out_dir(dir: &Path, own_files: &[&str]) -> Result<DirLock, OutDirError> {
    if let Ok(meta) = fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(OutDirError::NotADirectory {
                path: dir.display().to_string(),
            });
        }
    }
    fs::create_dir_all(dir).map_err(OutDirError::at(dir))?;
    let lock = lock_dir(dir)?;
    remove_leftovers(dir, own_files, false).map_err(OutDirError::at(dir))?;
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(OutDirError::at(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()
        .map_err(OutDirError::at(dir))?;
    if names.is_empty() {
        return Ok(lock);
    }
    names.sort();
    let shown = names.len().min(5);
    let mut entries = names[..shown].join(", ");
    if names.len() > shown {
        entries.push_str(&format!(" and {} more", names.len() - shown));
    }
    Err(OutDirError::NotEmpty {
        path: dir.display().to_string(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_only_hiers_own() {
        let names = ["config.json", "model.safetensors"];
        assert_eq!(leftover_pid(".config.json.tmp-123", &names), Some(123));
        assert_eq!(leftover_pid(".model.safetensors.tmp-7", &names), Some(7));
        for other in [
            "config.json",
            ".config.json.tmp-",
            ".config.json.tmp-12x",
            ".notes.txt.tmp-5",
            "config.json.tmp-5",
        ] {
            assert_eq!(leftover_pid(other, &names), None, "{other}");
        }
    }
}

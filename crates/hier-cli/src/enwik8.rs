//! `hier data enwik8`: download the Hutter Prize's enwik8.zip (resumable), verify it, unpack it.
//! The standard split (90M train / 5M validation / 5M test) is [`hier_train::Corpus::enwik8`].
//! (Here in the CLI, not in hier-train, so that the library builds no HTTP client.)

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hier_model::files::PathIoError;
use hier_train::digest::sha256_hex_of;
use hier_train::DataError;

/// Where the Hutter Prize page publishes it.
pub const URL: &str = "https://mattmahoney.net/dc/enwik8.zip";

/// What a download must match.
#[derive(Debug, Clone)]
pub struct Expected {
    pub zip_len: u64,
    pub zip_sha256: &'static str,
    pub member: &'static str,
    pub file_len: u64,
    pub file_sha256: &'static str,
}

/// The published enwik8 (md5 of the text: a1fa5ffddb56f4953e226637dabbb36a).
pub const ENWIK8: Expected = Expected {
    zip_len: 36_445_475,
    zip_sha256: "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
    member: "enwik8",
    file_len: 100_000_000,
    file_sha256: "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
};

fn sha256_file(path: &Path) -> Result<String, DataError> {
    let file = File::open(path).map_err(DataError::at(path))?;
    sha256_hex_of(file).map_err(DataError::at(path))
}

fn verified(path: &Path, len: u64, sha: &str) -> Result<bool, DataError> {
    match fs::metadata(path) {
        Ok(m) if m.len() == len => Ok(sha256_file(path)? == sha),
        _ => Ok(false),
    }
}

/// Bounds on a download, so that a dead, stalled or endless server ends in an error instead of
/// a hang or a full disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To open the connection.
    pub connect: Duration,
    /// Longest wait for any byte.
    pub read: Duration,
    /// A download slower than `stall_min_bytes` per `stall` (a trickle that keeps every single
    /// read under `read`) is stopped.
    pub stall: Duration,
    pub stall_min_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            stall: Duration::from_secs(120),
            stall_min_bytes: 64 << 10,
        }
    }
}

/// Make sure `dir/<member>` holds the verified dataset; download and unpack it if needed.
/// `progress(done, total)` reports download bytes. Returns the path of the unpacked file.
pub fn prepare(
    dir: &Path,
    url: &str,
    expected: &Expected,
    progress: impl FnMut(u64, u64),
) -> Result<PathBuf, DataError> {
    prepare_with(dir, url, expected, &Limits::default(), progress)
}

/// [`prepare`] with explicit download [`Limits`].
pub fn prepare_with(
    dir: &Path,
    url: &str,
    expected: &Expected,
    limits: &Limits,
    mut progress: impl FnMut(u64, u64),
) -> Result<PathBuf, DataError> {
    fs::create_dir_all(dir).map_err(DataError::at(dir))?;
    let file = dir.join(expected.member);
    if verified(&file, expected.file_len, expected.file_sha256)? {
        return Ok(file);
    }
    let zip = dir.join(format!("{}.zip", expected.member));
    if !verified(&zip, expected.zip_len, expected.zip_sha256)? {
        download(url, &zip, expected.zip_len, limits, &mut progress)?;
        if !verified(&zip, expected.zip_len, expected.zip_sha256)? {
            let _ = fs::remove_file(&zip);
            return Err(DataError::Download(format!(
                "{url} did not match the published size and sha256 {}; it was deleted, run the command again",
                expected.zip_sha256
            )));
        }
    }
    unpack(&zip, expected.member, &file)?;
    if !verified(&file, expected.file_len, expected.file_sha256)? {
        return Err(DataError::Download(format!(
            "{} unpacked from {} does not match sha256 {}",
            file.display(),
            zip.display(),
            expected.file_sha256
        )));
    }
    Ok(file)
}

/// Download `url` into `dest`, continuing a partial `dest.part` with an HTTP range request.
/// The file is known to be `total` bytes: a response that would grow it further is stopped
/// and its `.part` deleted.
fn download(
    url: &str,
    dest: &Path,
    total: u64,
    limits: &Limits,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), DataError> {
    let part = dest.with_extension("zip.part");
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have >= total {
        let _ = fs::remove_file(&part); // a .part as large as the file is not a partial file
        have = 0;
    }
    let offline = |e: String| {
        DataError::Download(format!(
            "could not download {url}: {e}. Check the network, or download it by hand and put it at {}",
            dest.display()
        ))
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(limits.connect)
        .timeout_read(limits.read)
        .build();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| offline(e.to_string()))?;
    let resumed = response.status() == 206;
    let done = if resumed { have } else { 0 };
    let announced = response
        .header("Content-Length")
        .and_then(|l| l.trim().parse::<u64>().ok());
    if let Some(len) = announced.filter(|&len| done.saturating_add(len) > total) {
        return Err(too_large(url, done.saturating_add(len), total));
    }
    let mut out = if resumed {
        OpenOptions::new()
            .append(true)
            .open(&part)
            .map_err(DataError::at(&part))?
    } else {
        File::create(&part).map_err(DataError::at(&part))?
    };
    let body = Body {
        part: &part,
        total,
        limits,
    };
    match body.copy(response.into_reader(), &mut out, done, progress) {
        Ok(()) => {}
        Err(Fail::TooLarge(len)) => {
            drop(out);
            let _ = fs::remove_file(&part);
            return Err(too_large(url, len, total));
        }
        Err(Fail::Stalled(bytes)) => {
            return Err(offline(format!(
                "the download stalled ({bytes} bytes in the last {:?}); run the command again to continue it",
                limits.stall
            )))
        }
        Err(Fail::Read(e)) => return Err(offline(format!("no data for {:?} ({e})", limits.read))),
        Err(Fail::Write(e)) => return Err(e),
    }
    out.sync_all().map_err(DataError::at(&part))?;
    fs::rename(&part, dest).map_err(DataError::at(dest))
}

fn too_large(url: &str, len: u64, total: u64) -> DataError {
    DataError::Download(format!(
        "{url} sends {len} bytes or more, larger than the {total} bytes the file has; the download was stopped and its .part deleted — check the --url"
    ))
}

/// Why a response body was not copied whole.
enum Fail {
    /// It grew past the file's known size (the bytes so far).
    TooLarge(u64),
    /// Fewer bytes than `stall_min_bytes` arrived in a `stall` window.
    Stalled(u64),
    /// Reading failed (the read timeout, a reset connection).
    Read(std::io::Error),
    Write(DataError),
}

/// A response body being written to a `.part` file, within the [`Limits`].
struct Body<'a> {
    part: &'a Path,
    total: u64,
    limits: &'a Limits,
}

impl Body<'_> {
    fn copy(
        &self,
        mut reader: impl Read,
        out: &mut File,
        mut done: u64,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(), Fail> {
        let mut buf = vec![0u8; 1 << 16];
        let (mut window, mut window_bytes) = (Instant::now(), 0u64);
        loop {
            let n = reader.read(&mut buf).map_err(Fail::Read)?;
            if n == 0 {
                return Ok(());
            }
            done += n as u64;
            if done > self.total {
                return Err(Fail::TooLarge(done));
            }
            out.write_all(&buf[..n])
                .map_err(|e| Fail::Write(DataError::at(self.part)(e)))?;
            progress(done, self.total);
            window_bytes += n as u64;
            if window.elapsed() >= self.limits.stall {
                if window_bytes < self.limits.stall_min_bytes {
                    return Err(Fail::Stalled(window_bytes));
                }
                (window, window_bytes) = (Instant::now(), 0);
            }
        }
    }
}

/// Extract `member` of the zip at `zip` into `dest` (through a temporary file).
fn unpack(zip: &Path, member: &str, dest: &Path) -> Result<(), DataError> {
    let bad = |e: String| {
        DataError::Download(format!(
            "{}: {e}; delete it and run the command again",
            zip.display()
        ))
    };
    let mut archive = zip::ZipArchive::new(File::open(zip).map_err(DataError::at(zip))?)
        .map_err(|e| bad(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| bad(format!("no member `{member}` ({e})")))?;
    let tmp = dest.with_extension("tmp");
    let mut out = File::create(&tmp).map_err(DataError::at(&tmp))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| bad(e.to_string()))?;
    out.sync_all().map_err(DataError::at(&tmp))?;
    fs::rename(&tmp, dest).map_err(DataError::at(dest))
}

#[cfg(test)]
mod tests;

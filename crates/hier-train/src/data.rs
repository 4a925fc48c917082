//! Byte-level corpora: the embedded Shakespeare text, any file (raw or `.gz`), and enwik8's
//! standard split. Tokens are bytes (vocabulary 256).
//!
//! A corpus is read into memory (enwik8 is 100 MB), not memory-mapped: a file truncated or
//! rewritten while a job trains on it then changes nothing, where a mapping would kill the
//! process with SIGBUS. A `.gz` file is decompressed in memory, never through a cache file
//! (which could be torn by a crash, or be taken for another file's).

use std::io::Read;
use std::ops::Range;
use std::path::Path;

use hier_model::files::{self, PathIoError};
use rand::{rngs::StdRng, Rng, SeedableRng};
use thiserror::Error;

/// The embedded default corpus: `data/shakespeare.txt.gz` in this crate (provenance in the
/// repository's `datasets/README.md`).
pub const SHAKESPEARE_GZ: &[u8] = include_bytes!("../data/shakespeare.txt.gz");

/// A problem with a dataset.
#[derive(Debug, Error)]
pub enum DataError {
    /// Reading the dataset failed (missing, not a regular file, not valid gzip, ...).
    #[error("dataset {path}: {source}; check the path given to --data")]
    Io {
        /// The dataset file.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    #[error("dataset {path} is empty; give a file with text in it")]
    /// A file with no bytes.
    Empty {
        /// The dataset file.
        path: String,
    },
    #[error("the {split} split of {path} has {len} bytes, fewer than seq_len + 1 = {needed}; use a larger file or a smaller seq_len")]
    /// A split shorter than one training window.
    TooShort {
        /// The corpus's name.
        path: String,
        /// `train`, `valid` or `test`.
        split: &'static str,
        /// Bytes in the split.
        len: usize,
        /// `seq_len + 1`.
        needed: usize,
    },
    #[error("dataset {path} has no {split} split")]
    /// A split the corpus does not have (only enwik8 has a test split).
    NoSplit {
        /// The corpus's name.
        path: String,
        /// The split asked for.
        split: &'static str,
    },
    #[error("{0}")]
    /// enwik8 that is missing, of the wrong size or checksum, or could not be downloaded;
    /// the message says what to do.
    Download(String),
}

/// Which part of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The bytes trained on.
    Train,
    /// Held out for validation during training and for `eval`.
    Valid,
    /// Held out for the final evaluation (enwik8 only).
    Test,
}

impl Split {
    /// `train`, `valid` or `test`, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// A byte corpus with its splits.
pub struct Corpus {
    name: String,
    bytes: Vec<u8>,
    train: Range<usize>,
    valid: Range<usize>,
    test: Option<Range<usize>>,
}

impl PathIoError for DataError {
    fn from_io(path: String, source: std::io::Error) -> Self {
        DataError::Io { path, source }
    }
}

fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(DataError::at(path))?;
    Ok(out)
}

impl Corpus {
    /// The embedded Shakespeare corpus: first 90% train, last 10% validation.
    pub fn shakespeare() -> Self {
        let bytes = gunzip(SHAKESPEARE_GZ, Path::new("shakespeare.txt.gz"))
            .expect("the embedded corpus is valid gzip");
        Self::split_90_10("shakespeare (embedded)".into(), bytes)
    }

    /// Any regular file, read into memory (a `.gz` file decompressed). First 90% train, last
    /// 10% valid.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut bytes = read(path)?;
        if path.extension().is_some_and(|e| e == "gz") {
            bytes = gunzip(&bytes, path)?;
        }
        if bytes.is_empty() {
            return Err(DataError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(Self::split_90_10(path.display().to_string(), bytes))
    }

    /// enwik8 (`dir/enwik8`, 10^8 bytes): 90M train, 5M validation, 5M test.
    pub fn enwik8(dir: &Path) -> Result<Self, DataError> {
        let path = dir.join("enwik8");
        let bytes = read(&path)?;
        if bytes.len() != ENWIK8_LEN {
            return Err(DataError::Download(format!(
                "{} has {} bytes, not {ENWIK8_LEN}; run `hier data enwik8` again",
                path.display(),
                bytes.len()
            )));
        }
        Ok(Corpus {
            name: path.display().to_string(),
            bytes,
            train: 0..90_000_000,
            valid: 90_000_000..95_000_000,
            test: Some(95_000_000..ENWIK8_LEN),
        })
    }

    /// The corpus a training config names: `None` is the embedded Shakespeare text, a directory
    /// is enwik8's, anything else a file.
    pub fn from_source(source: Option<&Path>) -> Result<Self, DataError> {
        match source {
            None => Ok(Self::shakespeare()),
            Some(dir) if dir.is_dir() => Self::enwik8(dir),
            Some(file) => Self::open(file),
        }
    }

    /// A corpus from bytes in memory (tests, embedding programs).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Self {
        Self::split_90_10(name.into(), bytes)
    }

    fn split_90_10(name: String, bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        let cut = len * 9 / 10;
        Corpus {
            name,
            bytes,
            train: 0..cut,
            valid: cut..len,
            test: None,
        }
    }

    /// A label for messages: the file's path, or `shakespeare (embedded)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn all(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes of a split.
    pub fn split(&self, split: Split) -> Result<&[u8], DataError> {
        let range = match split {
            Split::Train => self.train.clone(),
            Split::Valid => self.valid.clone(),
            Split::Test => self.test.clone().ok_or(DataError::NoSplit {
                path: self.name.clone(),
                split: "test",
            })?,
        };
        Ok(&self.all()[range])
    }

    /// Check that every split used for training holds at least one crop of `seq_len + 1` bytes.
    pub fn check_len(&self, seq_len: usize) -> Result<(), DataError> {
        for split in [Split::Train, Split::Valid] {
            let len = self.split(split)?.len();
            if len < seq_len + 1 {
                return Err(DataError::TooShort {
                    path: self.name.clone(),
                    split: split.name(),
                    len,
                    needed: seq_len + 1,
                });
            }
        }
        Ok(())
    }
}

/// Bytes of enwik8.
pub const ENWIK8_LEN: usize = 100_000_000;

/// Read the regular file `path` whole (a FIFO or a device is refused, not waited on).
fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    files::read_file(path, None).map_err(DataError::at(path))
}

/// The random crops of one micro-batch: `batch` windows of `len` bytes, as token ids.
///
/// The crop positions depend only on `(seed, step, micro)`, so a resumed run sees exactly the
/// batches the uninterrupted run would have seen.
pub fn random_crops(
    data: &[u8],
    len: usize,
    batch: usize,
    seed: u64,
    step: u64,
    micro: u64,
) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ micro.wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    let mut out = Vec::with_capacity(batch * len);
    for _ in 0..batch {
        let start = rng.random_range(0..=data.len() - len);
        out.extend(data[start..start + len].iter().map(|&b| b as i64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn embedded_corpus_is_the_documented_text() {
        let corpus = Corpus::shakespeare();
        let all = corpus.all();
        assert_eq!(all.len(), 5_057_198);
        assert_eq!(
            crate::digest::sha256_hex(all),
            "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"
        );
        assert_eq!(
            corpus.split(Split::Train).unwrap().len() + corpus.split(Split::Valid).unwrap().len(),
            all.len()
        );
    }

    #[test]
    fn standard_split_of_a_full_size_enwik8() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("enwik8")).unwrap();
        file.set_len(ENWIK8_LEN as u64).unwrap(); // sparse: no real disk use
        let corpus = Corpus::enwik8(dir.path()).unwrap();
        assert_eq!(corpus.split(Split::Train).unwrap().len(), 90_000_000);
        assert_eq!(corpus.split(Split::Valid).unwrap().len(), 5_000_000);
        assert_eq!(corpus.split(Split::Test).unwrap().len(), 5_000_000);
    }

    #[test]
    fn crops_are_deterministic_and_in_range() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 + 1).collect();
        let a = random_crops(&data, 33, 4, 7, 10, 0);
        assert_eq!(a, random_crops(&data, 33, 4, 7, 10, 0));
        assert_ne!(a, random_crops(&data, 33, 4, 7, 11, 0));
        assert_ne!(a, random_crops(&data, 33, 4, 7, 10, 1));
        assert_eq!(a.len(), 4 * 33);
        // each crop is a contiguous window
        for crop in a.chunks(33) {
            assert!(
                crop.windows(2).all(|w| w[0] % 251 + 1 == w[1]),
                "not contiguous"
            );
        }
    }

    #[test]
    fn files_raw_and_gz_and_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.txt");
        std::fs::write(&raw, b"hello world, hello hier").unwrap();
        let c = Corpus::open(&raw).unwrap();
        assert_eq!(c.split(Split::Train).unwrap().len(), 20);
        let gz = dir.path().join("a.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello world, hello hier").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let c2 = Corpus::open(&gz).unwrap();
        assert_eq!(
            c2.split(Split::Valid).unwrap(),
            c.split(Split::Valid).unwrap()
        );

        assert!(matches!(
            c.check_len(10),
            Err(DataError::TooShort { split: "valid", .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(Corpus::open(&empty), Err(DataError::Empty { .. })));
        let e = Corpus::open(&dir.path().join("missing")).err().unwrap();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(matches!(
            c.split(Split::Test),
            Err(DataError::NoSplit { .. })
        ));
    }

    /// Two `.gz` files with the same size and modification time are two corpora (a cache keyed
    /// by size and time once handed the second the first one's bytes).
    #[test]
    fn gz_files_alike_in_size_and_time_are_read_as_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let gz = |text: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
            enc.write_all(text).unwrap();
            enc.finish().unwrap()
        };
        let time = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut corpora = Vec::new();
        for (sub, text) in [("a", b"first corpus, ten"), ("b", b"other corpus, ten")] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            let path = dir.path().join(sub).join("data.txt.gz");
            std::fs::write(&path, gz(text)).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(time)
                .unwrap();
            corpora.push((Corpus::open(&path).unwrap(), text));
        }
        for (corpus, text) in corpora {
            assert_eq!(corpus.all(), text.as_slice());
        }
    }

    /// A data file truncated while a job uses it changes nothing (a memory map would SIGBUS).
    #[test]
    fn truncating_the_file_under_a_corpus_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.txt");
        let text: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &text).unwrap();
        let corpus = Corpus::open(&path).unwrap();
        std::fs::File::create(&path).unwrap(); // truncate to 0 bytes
        let sum: u64 = corpus.all().iter().map(|&b| b as u64).sum();
        assert_eq!(sum, text.iter().map(|&b| b as u64).sum::<u64>());
    }

    /// A FIFO or a device as the data is refused at once, not waited on or read forever.
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.txt");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let e = Corpus::open(path).err().expect("refused").to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let link = dir.path().join("zero.gz");
        std::os::unix::fs::symlink("/dev/urandom", &link).unwrap();
        let e = Corpus::open(&link).err().expect("refused").to_string();
        assert!(e.contains("character device"), "{e}");
    }
}

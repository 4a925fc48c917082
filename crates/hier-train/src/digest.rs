//! SHA-256 digests as lowercase hex, the form in which checkpoints and downloads record them.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of everything `reader` yields, read in 1 MiB pieces (for files too large to
/// hold twice), in lowercase hex.
pub fn sha256_hex_of(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex(b""), empty);
        assert_eq!(sha256_hex_of(&b""[..]).unwrap(), empty);
        let big = vec![7u8; 3 << 20];
        assert_eq!(sha256_hex_of(&big[..]).unwrap(), sha256_hex(&big));
    }
}

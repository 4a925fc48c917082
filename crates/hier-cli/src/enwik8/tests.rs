//! The enwik8 pipeline on a small zip built here, served from a loopback HTTP server that
//! honours range requests: download (and resume), verify, unpack. (The split itself:
//! `hier_train::data::tests::standard_split_of_a_full_size_enwik8`.)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use hier_train::digest::sha256_hex;
use hier_train::DataError;

use super::{prepare, prepare_with, Expected, Limits, ENWIK8};

/// What the zip of `text` (as member `enwik8`) must match.
fn expected(zip: &[u8], text: &[u8]) -> Expected {
    let sha = |bytes: &[u8]| &*Box::leak(sha256_hex(bytes).into_boxed_str());
    Expected {
        zip_len: zip.len() as u64,
        zip_sha256: sha(zip),
        member: "enwik8",
        file_len: text.len() as u64,
        file_sha256: sha(text),
    }
}

fn make_zip(member: &str, content: &[u8]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut cursor);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer.start_file(member, options).unwrap();
    writer.write_all(content).unwrap();
    writer.finish().unwrap();
    cursor.into_inner()
}

/// Serve `body` for `requests` requests; a `Range: bytes=N-` request gets a 206 with the tail.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/enwik8.zip", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let request = String::from_utf8_lossy(&request).to_lowercase();
            let from = request
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .and_then(|r| r.trim_end_matches('-').trim().parse::<usize>().ok());
            let (status, part) = match from {
                Some(n) => ("206 Partial Content", &body[n..]),
                None => ("200 OK", &body[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(part).unwrap();
        }
    });
    url
}

#[test]
fn downloads_resumes_verifies_and_splits() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let text: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect();
    let zip = make_zip("enwik8", &text);
    let expected = expected(&zip, &text);
    let dir = tempfile::tempdir().unwrap();
    // an interrupted earlier download left the first 1000 bytes
    std::fs::write(dir.path().join("enwik8.zip.part"), &zip[..1000]).unwrap();
    let url = serve(zip.clone(), 1);
    let mut reported = 0;
    let file = prepare(dir.path(), &url, &expected, |done, _| reported = done).unwrap();
    assert_eq!(reported, zip.len() as u64, "resumed from byte 1000");
    assert_eq!(std::fs::read(&file).unwrap(), text);
    // already there: no network needed
    prepare(
        dir.path(),
        "http://127.0.0.1:9/unreachable",
        &expected,
        |_, _| {},
    )
    .unwrap();
}

#[test]
fn a_corrupted_download_is_rejected_and_deleted() {
    let text = b"not the real enwik8".repeat(100);
    let zip = make_zip("enwik8", &text);
    let mut wrong = zip.clone();
    let last = wrong.len() - 30;
    wrong[last] ^= 1;
    let expected = expected(&zip, &text);
    let dir = tempfile::tempdir().unwrap();
    let url = serve(wrong, 1);
    let e = prepare(dir.path(), &url, &expected, |_, _| {}).unwrap_err();
    assert!(matches!(e, DataError::Download(_)), "{e}");
    assert!(e.to_string().contains("sha256"), "{e}");
    assert!(!dir.path().join("enwik8.zip").exists());
}

#[test]
fn offline_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = prepare(
        dir.path(),
        "http://127.0.0.1:9/enwik8.zip",
        &ENWIK8,
        |_, _| {},
    )
    .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("could not download") && message.contains("by hand"),
        "{message}"
    );
}

/// Accept one connection, read its request, then hand the stream to `respond`.
fn serve_with(respond: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/enwik8.zip", listener.local_addr().unwrap());
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        respond(stream);
    });
    url
}

fn small() -> Expected {
    Expected {
        zip_len: 10_000,
        zip_sha256: "0",
        member: "enwik8",
        file_len: 1,
        file_sha256: "0",
    }
}

fn quick() -> Limits {
    Limits {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(1),
        stall: Duration::from_secs(1),
        stall_min_bytes: 1_000,
    }
}

#[test]
fn an_endless_response_stops_at_the_known_size() {
    // no Content-Length, bytes until the client hangs up
    let url = serve_with(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let chunk = [b'x'; 4096];
        for _ in 0..100_000 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = prepare_with(dir.path(), &url, &small(), &quick(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("larger than the 10000 bytes"), "{e}");
    assert!(!dir.path().join("enwik8.zip.part").exists());
    // a Content-Length beyond the known size is refused before the body
    let url = serve_with(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n");
    });
    let e = prepare_with(dir.path(), &url, &small(), &quick(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn a_silent_or_trickling_server_times_out() {
    let t0 = Instant::now();
    let url = serve_with(|s| {
        thread::sleep(Duration::from_secs(10)); // accepts, never answers
        drop(s);
    });
    let dir = tempfile::tempdir().unwrap();
    let e = prepare_with(dir.path(), &url, &small(), &quick(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("could not download"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // a byte every 100 ms: every read is quick, the download is not
    let url = serve_with(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
        for _ in 0..100 {
            if s.write_all(b"x").and_then(|_| s.flush()).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let e = prepare_with(dir.path(), &url, &small(), &quick(), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("stalled"), "{e}");
}

//! The downloader against a real HTTP server on 127.0.0.1, started here (no other address is
//! ever contacted), serving a small archive in the real format: a `.tar.gz` whose top folder is
//! `cifar-10-batches-bin/` with binary batch files. Each case ends with the dataset in place or
//! with a clear error and nothing that looks like a dataset.

use md5::{Digest, Md5};
use mocca_data::download::{fetch_archive, Archive, FetchOptions};
use mocca_data::{cifar10, detect, DataError, Format};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const RECORD: usize = 3073;

/// A `cifar-10-batches-bin` archive of two records per batch file, labels `file index`.
fn cifar_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (i, name) in files.iter().enumerate() {
        let mut bytes = vec![(i * 17 % 251) as u8; 2 * RECORD];
        bytes[0] = i as u8;
        bytes[RECORD] = i as u8;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &bytes[..],
        )
        .unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the server does with one connection.
#[derive(Clone, Copy)]
enum Reply {
    /// The file, or the requested `Range` of it (206).
    Serve,
    /// `Content-Length` of the whole file, half of it, then the connection closes.
    HalfThenClose,
    /// This status, no file.
    Status(u16),
}

struct Server {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Answers one connection per reply, in order, with `body`.
    fn start(body: Vec<u8>, replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            for reply in replies {
                let (stream, _) = listener.accept().unwrap();
                let request = read_request(&stream);
                seen.lock().unwrap().push(request.clone());
                answer(stream, &request, &body, reply);
            }
        });
        Server {
            base,
            requests,
            thread: Some(thread),
        }
    }

    fn archive(&self, md5: &str) -> Archive {
        Archive {
            name: "CIFAR-10 (test)".into(),
            file: "cifar-10-binary.tar.gz".into(),
            url: format!("{}/cifar-10-binary.tar.gz", self.base),
            md5: md5.into(),
            folder: "cifar-10-batches-bin".into(),
        }
    }

    /// Every request the server answered (waits for the replies to be used up).
    fn requests(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().unwrap();
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            return request;
        }
        request.push_str(&line);
    }
}

fn answer(mut stream: TcpStream, request: &str, body: &[u8], reply: Reply) {
    let range_start = request
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(String::from)
        })
        .and_then(|r| r.trim_end_matches('-').trim().parse::<usize>().ok());
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        Reply::Serve => match range_start {
            Some(from) => {
                let extra = format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                );
                let _ = stream
                    .write_all(head("206 Partial Content", body.len() - from, &extra).as_bytes());
                let _ = stream.write_all(&body[from..]);
            }
            None => {
                let _ = stream.write_all(head("200 OK", body.len(), "").as_bytes());
                let _ = stream.write_all(body);
            }
        },
        Reply::HalfThenClose => {
            let _ = stream.write_all(head("200 OK", body.len(), "").as_bytes());
            let _ = stream.write_all(&body[..body.len() / 2]);
        }
        Reply::Status(code) => {
            let text = b"no";
            let status = match code {
                404 => "404 Not Found",
                _ => "500 Internal Server Error",
            };
            let _ = stream.write_all(head(status, text.len(), "").as_bytes());
            let _ = stream.write_all(text);
        }
    }
    let _ = stream.flush();
}

fn offline() -> FetchOptions {
    FetchOptions::default()
}

/// The names in `root`, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_download_is_checked_unpacked_into_place_and_opens() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::Serve]);
    let root = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(0u64));
    let s = Arc::clone(&seen);
    let mut opts = FetchOptions {
        progress: Some(Box::new(move |done, _| *s.lock().unwrap() = done)),
        ..offline()
    };
    let dir = fetch_archive(&server.archive(&md5_hex(&body)), root.path(), &mut opts).unwrap();
    assert_eq!(dir, root.path().join("cifar-10-batches-bin"));
    assert_eq!(*seen.lock().unwrap(), body.len() as u64);
    assert_eq!(detect(&dir).unwrap().0, Format::Cifar10Binary);
    let test = cifar10::read_batches(&[dir.join("test_batch.bin")]).unwrap();
    assert_eq!((test.len(), test.label(0)), (2, Some(5)));
    // The archive is kept (as torchvision keeps it); no temporary file or folder is left.
    assert_eq!(
        listing(root.path()),
        ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_dataset_in_place_is_used_without_the_network() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("cifar-10-batches-bin")).unwrap();
    let archive = Archive {
        name: "x".into(),
        file: "x.tar.gz".into(),
        // Nothing listens here: a request would fail.
        url: "http://127.0.0.1:9/x.tar.gz".into(),
        md5: "0".into(),
        folder: "cifar-10-batches-bin".into(),
    };
    let mut opts = FetchOptions {
        allow_network: false,
        ..offline()
    };
    let dir = fetch_archive(&archive, root.path(), &mut opts).unwrap();
    assert_eq!(dir, root.path().join("cifar-10-batches-bin"));
}

#[test]
fn a_wrong_checksum_unpacks_nothing_and_names_both_sums() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::Serve]);
    let root = tempfile::tempdir().unwrap();
    let wrong = "0123456789abcdef0123456789abcdef";
    let err = fetch_archive(&server.archive(wrong), root.path(), &mut offline()).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(wrong) && msg.contains(&md5_hex(&body)),
        "{msg}"
    );
    assert!(msg.contains("by hand"), "{msg}");
    // A complete download with the wrong bytes is not kept for resuming.
    assert!(
        listing(root.path()).is_empty(),
        "{:?}",
        listing(root.path())
    );
    server.requests();
}

#[test]
fn a_truncated_body_is_an_error_that_keeps_the_partial_file() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::HalfThenClose]);
    let root = tempfile::tempdir().unwrap();
    let err = fetch_archive(
        &server.archive(&md5_hex(&body)),
        root.path(),
        &mut offline(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("next run resumes it"), "{err}");
    assert_eq!(listing(root.path()), ["cifar-10-binary.tar.gz.part"]);
    let part = std::fs::read(root.path().join("cifar-10-binary.tar.gz.part")).unwrap();
    assert_eq!(part, body[..body.len() / 2]);
    server.requests();
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::HalfThenClose, Reply::Serve]);
    let archive = server.archive(&md5_hex(&body));
    let root = tempfile::tempdir().unwrap();
    assert!(fetch_archive(&archive, root.path(), &mut offline()).is_err());
    let dir = fetch_archive(&archive, root.path(), &mut offline()).unwrap();
    assert_eq!(detect(&dir).unwrap().0, Format::Cifar10Binary);
    let requests = server.requests();
    assert!(!requests[0].to_ascii_lowercase().contains("range:"));
    let range = format!("range: bytes={}-", body.len() / 2);
    assert!(
        requests[1].to_ascii_lowercase().contains(&range),
        "{}",
        requests[1]
    );
    assert_eq!(
        listing(root.path()),
        ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
    );
}

#[test]
fn http_errors_are_named_and_leave_nothing() {
    for code in [404u16, 500] {
        let server = Server::start(Vec::new(), vec![Reply::Status(code)]);
        let root = tempfile::tempdir().unwrap();
        let archive = server.archive("00");
        let msg = fetch_archive(&archive, root.path(), &mut offline())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("HTTP {code}")), "{msg}");
        assert!(msg.contains(&archive.url), "{msg}");
        assert!(
            listing(root.path()).is_empty(),
            "{code}: {:?}",
            listing(root.path())
        );
        server.requests();
    }
}

#[test]
fn no_server_is_a_connection_error_with_the_way_by_hand() {
    // A port that was just bound and closed: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = tempfile::tempdir().unwrap();
    let archive = Archive {
        name: "CIFAR-10 (test)".into(),
        file: "cifar-10-binary.tar.gz".into(),
        url: format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz"),
        md5: "00".into(),
        folder: "cifar-10-batches-bin".into(),
    };
    let msg = fetch_archive(&archive, root.path(), &mut offline())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains("by hand: download"), "{msg}");
    assert!(listing(root.path()).is_empty());
}

#[test]
fn a_broken_archive_leaves_no_dataset_folder() {
    // Valid gzip of something that is not a tar holding cifar-10-batches-bin/.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&[7u8; 5000]).unwrap();
    let body = gz.finish().unwrap();
    let server = Server::start(body.clone(), vec![Reply::Serve]);
    let root = tempfile::tempdir().unwrap();
    let err = fetch_archive(
        &server.archive(&md5_hex(&body)),
        root.path(),
        &mut offline(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
    // The checked archive stays; no folder, temporary or final, does.
    assert_eq!(listing(root.path()), ["cifar-10-binary.tar.gz"]);
    server.requests();
}

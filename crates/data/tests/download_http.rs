//! The downloader against a real HTTP server on 127.0.0.1, started here (no other address is
//! ever contacted: every archive is the official one `mirrored` at the test server), serving
//! small archives in the real formats: a `.tar.gz` whose top folder is `cifar-10-batches-bin/`
//! with binary batch files the CIFAR-10 reader reads (and `cifar-100-binary/`, `stl10_binary/`
//! laid out like theirs). Each case ends with the dataset in place or with a clear error and
//! nothing that looks like a dataset: no dataset folder, no temporary folder; only a `.part`
//! file of an interrupted download stays, so that the next run resumes it.

use md5::{Digest, Md5};
use mocca_data::download::{fetch_archive, Archive, Dataset, FetchOptions};
use mocca_data::{cifar10, detect, DataError, Format};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const RECORD: usize = cifar10::RECORD_BYTES;
const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// A gzipped tar of `files` (path inside the archive, contents).
fn tar_gz(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// The records of batch file `i`: two images, labels `i` and `9 - i`, pixels `i * 17 + 1`.
fn cifar_batch(i: usize) -> Vec<u8> {
    let mut bytes = vec![(i * 17 + 1) as u8; 2 * RECORD];
    bytes[0] = i as u8;
    bytes[RECORD] = (9 - i) as u8;
    bytes
}

/// A `cifar-10-binary.tar.gz` as the official one is laid out, two records per batch file.
fn cifar_archive() -> Vec<u8> {
    let files: Vec<_> = CIFAR10_FILES
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("cifar-10-batches-bin/{name}"), cifar_batch(i)))
        .collect();
    tar_gz(&files)
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
    /// The whole file with 200, whatever `Range` asked (a server that does not resume).
    IgnoreRange,
    /// 206 from byte 0 whatever `Range` asked (a broken server).
    WrongRange,
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
        // Polled, so that a client that never comes fails the test instead of hanging it.
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            for reply in replies {
                let Some(stream) = accept(&listener) else {
                    return;
                };
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

    /// The official archive of `dataset` at this server, with `md5` for the served bytes.
    fn archive(&self, dataset: Dataset, md5: &str) -> Archive {
        Archive {
            md5: md5.into(),
            ..dataset.archive().mirrored(&self.base)
        }
    }

    /// Every request the server answered (waits for the replies to be used up).
    fn requests(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().unwrap();
        self.requests.lock().unwrap().clone()
    }
}

fn accept(listener: &TcpListener) -> Option<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
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

/// The `N` of a `Range: bytes=N-` header.
fn range_start(request: &str) -> Option<usize> {
    request.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("range: bytes=")
            .and_then(|r| r.trim().trim_end_matches('-').parse().ok())
    })
}

fn answer(mut stream: TcpStream, request: &str, body: &[u8], reply: Reply) {
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    let partial = |from: usize| {
        let extra = format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        );
        (head("206 Partial Content", body.len() - from, &extra), from)
    };
    let (head, from) = match (reply, range_start(request)) {
        (Reply::Serve, Some(from)) => partial(from),
        (Reply::WrongRange, _) => partial(0),
        (Reply::Serve | Reply::IgnoreRange, _) => (head("200 OK", body.len(), ""), 0),
        (Reply::HalfThenClose, _) => {
            let _ = stream.write_all(head("200 OK", body.len(), "").as_bytes());
            let _ = stream.write_all(&body[..body.len() / 2]);
            return;
        }
        (Reply::Status(code), _) => {
            let status = match code {
                404 => "404 Not Found",
                416 => "416 Range Not Satisfiable",
                _ => "500 Internal Server Error",
            };
            let _ = stream.write_all(head(status, 2, "").as_bytes());
            let _ = stream.write_all(b"no");
            return;
        }
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body[from..]);
    let _ = stream.flush();
}

fn online() -> FetchOptions {
    FetchOptions::default()
}

/// The names in `root` (hidden ones too), sorted.
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

/// The unpacked folder holds exactly the archive's batches, which the CIFAR-10 reader reads.
fn assert_cifar10_opens(dir: &Path) {
    assert_eq!(detect(dir).unwrap(), (Format::Cifar10Binary, dir.into()));
    for (i, name) in CIFAR10_FILES.iter().enumerate() {
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), cifar_batch(i));
    }
    let paths: Vec<_> = CIFAR10_FILES[..5].iter().map(|f| dir.join(f)).collect();
    let train = cifar10::read_batches(&paths).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!((train.label(2), train.label(3)), (Some(1), Some(8)));
    assert_eq!(train.image(4).pixels[0], 2 * 17 + 1);
}

const DONE: [&str; 2] = ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"];

#[test]
fn a_download_is_checked_unpacked_into_place_and_opens() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::Serve]);
    let root = tempfile::tempdir().unwrap();
    let root = root.path().join("cache/mocca");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut opts = FetchOptions {
        progress: Some(Box::new(move |done, total| {
            s.lock().unwrap().push((done, total))
        })),
        ..online()
    };
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let dir = fetch_archive(&archive, &root, &mut opts).unwrap();
    assert_eq!(dir, root.join("cifar-10-batches-bin"));
    assert_cifar10_opens(&dir);
    // Progress starts at 0 and ends at the size the server said.
    let seen = seen.lock().unwrap().clone();
    let n = Some(body.len() as u64);
    assert_eq!(seen.first(), Some(&(0, n)));
    assert_eq!(seen.last(), Some(&(body.len() as u64, n)));
    // The archive is kept (as torchvision keeps it); no temporary file or folder is left.
    assert_eq!(listing(&root), DONE);
    assert_eq!(
        std::fs::read(root.join("cifar-10-binary.tar.gz")).unwrap(),
        body
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with("GET /cifar-10-binary.tar.gz HTTP/1.1"));
    // A second fetch uses the folder in place: no server is listening any more.
    let mut offline = FetchOptions {
        allow_network: false,
        ..online()
    };
    assert_eq!(fetch_archive(&archive, &root, &mut offline).unwrap(), dir);
}

#[test]
fn cifar100_and_stl10_archives_are_unpacked_into_place() {
    let cases = [
        (
            Dataset::Cifar100,
            "cifar-100-binary",
            vec!["train.bin", "test.bin", "fine_label_names.txt"],
        ),
        (
            Dataset::Stl10,
            "stl10_binary",
            vec![
                "train_X.bin",
                "train_y.bin",
                "test_X.bin",
                "unlabeled_X.bin",
            ],
        ),
    ];
    for (dataset, folder, names) in cases {
        let files: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{folder}/{n}"), vec![i as u8; 96 * 96 * 3 + i]))
            .collect();
        let body = tar_gz(&files);
        let server = Server::start(body.clone(), vec![Reply::Serve]);
        let root = tempfile::tempdir().unwrap();
        let archive = server.archive(dataset, &md5_hex(&body));
        let dir = fetch_archive(&archive, root.path(), &mut online()).unwrap();
        assert_eq!(dir, root.path().join(folder));
        for (name, bytes) in &files {
            assert_eq!(&std::fs::read(root.path().join(name)).unwrap(), bytes);
        }
        assert_eq!(listing(root.path()), [folder, &archive.file]);
        server.requests();
    }
}

#[test]
fn a_dataset_in_place_is_used_without_the_network() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("cifar-10-batches-bin")).unwrap();
    // Never contacted: the folder is there.
    let archive = Dataset::Cifar10.archive().mirrored("http://127.0.0.1:9");
    let mut opts = FetchOptions {
        allow_network: false,
        ..online()
    };
    let dir = fetch_archive(&archive, root.path(), &mut opts).unwrap();
    assert_eq!(dir, root.path().join("cifar-10-batches-bin"));
}

#[test]
fn an_archive_put_there_by_hand_is_checked_and_unpacked_without_the_network() {
    let body = cifar_archive();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cifar-10-binary.tar.gz"), &body).unwrap();
    let mut offline = FetchOptions {
        allow_network: false,
        ..online()
    };
    // Right checksum: unpacked.
    let archive = Archive {
        md5: md5_hex(&body),
        ..Dataset::Cifar10.archive().mirrored("http://127.0.0.1:9")
    };
    let dir = fetch_archive(&archive, root.path(), &mut offline).unwrap();
    assert_cifar10_opens(&dir);
    assert_eq!(listing(root.path()), DONE);

    // Wrong checksum: an error, nothing unpacked, and the user's file left alone.
    let other = tempfile::tempdir().unwrap();
    let path = other.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, &body).unwrap();
    let err = fetch_archive(&Dataset::Cifar10.archive(), other.path(), &mut offline).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("remove it to download it again"), "{msg}");
    assert!(msg.contains("c32a1d4ab5d03f1284b67883e8d87530"), "{msg}");
    assert_eq!(listing(other.path()), ["cifar-10-binary.tar.gz"]);
}

#[test]
fn a_run_killed_while_unpacking_leaves_nothing_behind_the_next() {
    // Its temporary folder, named after a process that no longer runs (pids stop well below
    // u32::MAX), beside the archive it had downloaded.
    let body = cifar_archive();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cifar-10-binary.tar.gz"), &body).unwrap();
    let stale = root
        .path()
        .join(".cifar-10-batches-bin.unpacking-4294967295/cifar-10-batches-bin");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("data_batch_1.bin"), cifar_batch(0)).unwrap();
    let archive = Archive {
        md5: md5_hex(&body),
        ..Dataset::Cifar10.archive().mirrored("http://127.0.0.1:9")
    };
    let mut offline = FetchOptions {
        allow_network: false,
        ..online()
    };
    let dir = fetch_archive(&archive, root.path(), &mut offline).unwrap();
    assert_cifar10_opens(&dir);
    if Path::new("/proc/self").exists() {
        assert_eq!(listing(root.path()), DONE);
    }
}

#[test]
fn a_wrong_checksum_unpacks_nothing_and_names_both_sums() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::Serve]);
    let root = tempfile::tempdir().unwrap();
    let wrong = "0123456789abcdef0123456789abcdef";
    let archive = server.archive(Dataset::Cifar10, wrong);
    let err = fetch_archive(&archive, root.path(), &mut online()).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(wrong) && msg.contains(&md5_hex(&body)),
        "{msg}"
    );
    assert!(msg.contains(&archive.url), "{msg}");
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
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let err = fetch_archive(&archive, root.path(), &mut online()).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("the next run resumes it"), "{msg}");
    assert!(
        msg.contains(&archive.url) && msg.contains("by hand"),
        "{msg}"
    );
    // Only the partial file, for resuming: no archive, no folder, no temporary folder.
    assert_eq!(listing(root.path()), ["cifar-10-binary.tar.gz.part"]);
    let part = std::fs::read(root.path().join("cifar-10-binary.tar.gz.part")).unwrap();
    assert_eq!(part, body[..body.len() / 2]);
    server.requests();
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::HalfThenClose, Reply::Serve]);
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let root = tempfile::tempdir().unwrap();
    assert!(fetch_archive(&archive, root.path(), &mut online()).is_err());
    assert_eq!(listing(root.path()), ["cifar-10-binary.tar.gz.part"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut opts = FetchOptions {
        progress: Some(Box::new(move |done, total| {
            s.lock().unwrap().push((done, total))
        })),
        ..online()
    };
    let dir = fetch_archive(&archive, root.path(), &mut opts).unwrap();
    assert_cifar10_opens(&dir);
    assert_eq!(
        std::fs::read(root.path().join("cifar-10-binary.tar.gz")).unwrap(),
        body
    );
    assert_eq!(listing(root.path()), DONE);
    // The second run started at the half already on disk.
    let half = (body.len() / 2) as u64;
    assert_eq!(seen.lock().unwrap()[0], (half, Some(body.len() as u64)));
    let requests = server.requests();
    assert_eq!(range_start(&requests[0]), None, "{}", requests[0]);
    assert_eq!(
        range_start(&requests[1]),
        Some(body.len() / 2),
        "{}",
        requests[1]
    );
}

#[test]
fn a_server_that_does_not_resume_restarts_the_download() {
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::HalfThenClose, Reply::IgnoreRange]);
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let root = tempfile::tempdir().unwrap();
    assert!(fetch_archive(&archive, root.path(), &mut online()).is_err());
    let dir = fetch_archive(&archive, root.path(), &mut online()).unwrap();
    assert_cifar10_opens(&dir);
    // The 200's whole file replaced the partial one rather than being appended to it.
    assert_eq!(
        std::fs::read(root.path().join("cifar-10-binary.tar.gz")).unwrap(),
        body
    );
    assert_eq!(listing(root.path()), DONE);
    let requests = server.requests();
    assert_eq!(range_start(&requests[1]), Some(body.len() / 2));
}

#[test]
fn a_range_from_the_wrong_offset_restarts_the_download() {
    let body = cifar_archive();
    let replies = vec![Reply::HalfThenClose, Reply::WrongRange, Reply::Serve];
    let server = Server::start(body.clone(), replies);
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let root = tempfile::tempdir().unwrap();
    assert!(fetch_archive(&archive, root.path(), &mut online()).is_err());
    let dir = fetch_archive(&archive, root.path(), &mut online()).unwrap();
    assert_cifar10_opens(&dir);
    assert_eq!(listing(root.path()), DONE);
    let requests = server.requests();
    assert_eq!(range_start(&requests[1]), Some(body.len() / 2));
    // Asked again from the start, without Range.
    assert_eq!(range_start(&requests[2]), None, "{}", requests[2]);
}

#[test]
fn a_complete_partial_file_is_checked_when_the_server_has_no_more() {
    // A run killed between the last byte and the rename: the server answers 416 to the Range.
    let body = cifar_archive();
    let server = Server::start(body.clone(), vec![Reply::Status(416)]);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cifar-10-binary.tar.gz.part"), &body).unwrap();
    let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
    let dir = fetch_archive(&archive, root.path(), &mut online()).unwrap();
    assert_cifar10_opens(&dir);
    assert_eq!(listing(root.path()), DONE);
    assert_eq!(range_start(&server.requests()[0]), Some(body.len()));
}

#[test]
fn http_errors_are_named_and_leave_nothing() {
    for (code, reason) in [(404u16, "Not Found"), (500, "Internal Server Error")] {
        let server = Server::start(Vec::new(), vec![Reply::Status(code)]);
        let root = tempfile::tempdir().unwrap();
        let archive = server.archive(Dataset::Cifar10, "00");
        let err = fetch_archive(&archive, root.path(), &mut online()).unwrap_err();
        assert!(matches!(err, DataError::Download { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("HTTP {code} ({reason})")), "{msg}");
        assert!(msg.contains(&archive.url), "{msg}");
        assert!(msg.contains("by hand, download"), "{msg}");
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
    let archive = Dataset::Cifar10
        .archive()
        .mirrored(&format!("http://127.0.0.1:{port}"));
    let err = fetch_archive(&archive, root.path(), &mut online()).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains(&archive.url), "{msg}");
    assert!(msg.contains("c32a1d4ab5d03f1284b67883e8d87530"), "{msg}");
    assert!(msg.contains("by hand, download"), "{msg}");
    assert!(listing(root.path()).is_empty());
}

#[test]
fn a_broken_archive_leaves_no_dataset_folder() {
    // Valid gzip of something that is not a tar holding cifar-10-batches-bin/.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&[7u8; 5000]).unwrap();
    let not_tar = gz.finish().unwrap();
    // A real archive cut off in its middle (checksummed as cut, so it gets to the unpacking).
    let full = cifar_archive();
    let cut = full[..full.len() * 2 / 3].to_vec();
    // A whole tar of another folder.
    let elsewhere = tar_gz(&[("other/data_batch_1.bin".into(), cifar_batch(0))]);
    for body in [not_tar, cut, elsewhere] {
        let server = Server::start(body.clone(), vec![Reply::Serve]);
        let root = tempfile::tempdir().unwrap();
        let archive = server.archive(Dataset::Cifar10, &md5_hex(&body));
        let err = fetch_archive(&archive, root.path(), &mut online()).unwrap_err();
        assert!(matches!(err, DataError::Malformed { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");
        assert!(msg.contains("nothing was put in place"), "{msg}");
        assert!(
            msg.contains(&archive.url) && msg.contains("by hand"),
            "{msg}"
        );
        // The checked archive stays; no folder, temporary or final, does.
        assert_eq!(listing(root.path()), ["cifar-10-binary.tar.gz"]);
        server.requests();
    }
}

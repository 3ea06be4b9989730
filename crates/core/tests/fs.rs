//! `write_atomic`: the destination holds the old bytes or the new ones, and no temporary file
//! is left behind.

use mocca_core::fs::{temp_path, write_atomic, write_atomic_with, WriteError};
use std::path::{Path, PathBuf};

fn empty_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocca-core-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_creates_the_file_and_leaves_no_temp_file() {
    let d = empty_dir("create");
    write_atomic(&d.join("config.toml"), b"epochs = 3\n").unwrap();
    assert_eq!(
        std::fs::read(d.join("config.toml")).unwrap(),
        b"epochs = 3\n"
    );
    assert_eq!(names(&d), ["config.toml"]);
}

#[test]
fn write_replaces_an_existing_file_whole() {
    let d = empty_dir("replace");
    let p = d.join("checkpoint.safetensors");
    write_atomic(&p, b"a much longer old content").unwrap();
    write_atomic(&p, b"new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(names(&d), ["checkpoint.safetensors"]);
}

#[test]
fn the_temp_file_is_hidden_beside_the_destination_and_names_the_process() {
    let tmp = temp_path(Path::new("runs/a/checkpoint.safetensors")).unwrap();
    assert_eq!(
        tmp,
        Path::new("runs/a").join(format!(
            ".checkpoint.safetensors.tmp-{}",
            std::process::id()
        ))
    );
    let bare = temp_path(Path::new("out.png")).unwrap();
    assert_eq!(
        bare,
        Path::new(".").join(format!(".out.png.tmp-{}", std::process::id()))
    );
}

#[test]
fn a_path_without_a_file_name_is_an_invalid_input_error() {
    let err = write_atomic(Path::new("/"), b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_failing_writer_leaves_the_old_file_and_no_temp_file() {
    let d = empty_dir("fail");
    let p = d.join("state.bin");
    write_atomic(&p, b"old").unwrap();
    let result = write_atomic_with(&p, |tmp| {
        std::fs::write(tmp, b"half")?;
        Err::<(), std::io::Error>(std::io::Error::other("disk full"))
    });
    assert!(matches!(result, Err(WriteError::Write(e)) if e.to_string() == "disk full"));
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(names(&d), ["state.bin"]);
}

#[test]
fn a_writer_given_the_temp_path_commits_what_it_wrote() {
    let d = empty_dir("with");
    let p = d.join("bank.safetensors");
    write_atomic_with(&p, |tmp| {
        assert_eq!(tmp, temp_path(&p).unwrap());
        std::fs::write(tmp, b"rows")
    })
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"rows");
    assert_eq!(names(&d), ["bank.safetensors"]);
}

#[test]
fn writing_into_a_missing_folder_fails_without_creating_it() {
    let d = empty_dir("missing");
    let err = write_atomic(&d.join("no/such/file"), b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(names(&d).is_empty());
}

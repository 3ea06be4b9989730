//! A listing of a large image folder kept on disk, so that the next run starts without walking
//! the tree again (ImageNet: 1,000 folders, 1.28 M files).
//!
//! The cache is valid while the modification times of the dataset folder and of every folder on
//! the way from it to a listed file (the split folder, the class folders and any subfolder of
//! theirs) are those recorded: adding, removing or renaming a file or a folder in one of them
//! changes its time. A file whose content changes in place keeps its folder's time; such a file
//! is decoded as it is now when its batch comes.

use crate::error::Result;
use crate::fsutil;
use crate::image_folder::Listing;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const MAGIC: &str = "mocca-listing 1";

/// The cache file of a listing of `key` (the root, the split and the options that shape it)
/// in folder `dir`.
pub(crate) fn cache_path(dir: &Path, key: &str) -> PathBuf {
    // FNV-1a: a stable name, not a security boundary (the key is checked inside).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    dir.join(format!("listing-{h:016x}.tsv"))
}

fn mtime_ns(path: &Path) -> Option<u128> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

/// The folders whose times decide validity: the dataset folder and every folder between it and
/// a listed file (the split folder, the class folders, their subfolders).
pub(crate) fn watched_dirs(root: &Path, listing: &Listing) -> Vec<PathBuf> {
    let mut parents: Vec<&Path> = listing.files.iter().filter_map(|f| f.parent()).collect();
    parents.dedup();
    let mut dirs = std::collections::BTreeSet::from([root.to_path_buf()]);
    for parent in parents {
        // From the file's folder up to the dataset folder: a class folder that holds only
        // subfolders is watched too. (A folder outside the dataset folder: itself alone.)
        for dir in parent.ancestors() {
            if !dir.starts_with(root) {
                if dir == parent {
                    dirs.insert(dir.to_path_buf());
                }
                break;
            }
            // The dataset folder is in the set from the start: the walk ends there.
            if !dirs.insert(dir.to_path_buf()) {
                break;
            }
        }
    }
    dirs.into_iter().collect()
}

/// Writes `listing` under `key`; a listing that cannot be written in this format (a path with
/// a tab or a line break) is not cached.
pub(crate) fn store(path: &Path, key: &str, root: &Path, listing: &Listing) -> Result<()> {
    let unfit = |s: &str| s.contains(['\t', '\n', '\r']);
    let mut out = format!("{MAGIC}\nkey\t{key}\n");
    for d in watched_dirs(root, listing) {
        let Some(t) = mtime_ns(&d) else {
            return Ok(());
        };
        let d = d.to_string_lossy();
        if unfit(&d) {
            return Ok(());
        }
        out.push_str(&format!("dir\t{t}\t{d}\n"));
    }
    for c in &listing.class_names {
        if unfit(c) {
            return Ok(());
        }
        out.push_str(&format!("class\t{c}\n"));
    }
    for (i, f) in listing.files.iter().enumerate() {
        let f = f.to_string_lossy();
        if unfit(&f) {
            return Ok(());
        }
        match &listing.labels {
            Some(l) => out.push_str(&format!("file\t{}\t{f}\n", l[i])),
            None => out.push_str(&format!("file\t-\t{f}\n")),
        }
    }
    fsutil::write_atomic(path, out.as_bytes())
}

/// The listing cached under `key` at `path`, if there is one and every watched folder still has
/// its recorded time; `None` otherwise (a damaged file included: it is listed again).
pub(crate) fn load(path: &Path, key: &str) -> Option<Listing> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC || lines.next()?.strip_prefix("key\t")? != key {
        return None;
    }
    let mut listing = Listing {
        files: Vec::new(),
        labels: Some(Vec::new()),
        class_names: Vec::new(),
    };
    let mut unlabeled = false;
    for line in lines {
        let (kind, rest) = line.split_once('\t')?;
        match kind {
            "dir" => {
                let (t, d) = rest.split_once('\t')?;
                if mtime_ns(Path::new(d))? != t.parse::<u128>().ok()? {
                    return None;
                }
            }
            "class" => listing.class_names.push(rest.to_string()),
            "file" => {
                let (label, f) = rest.split_once('\t')?;
                if label == "-" {
                    unlabeled = true;
                } else {
                    let l: u32 = label.parse().ok()?;
                    if l as usize >= listing.class_names.len() {
                        return None;
                    }
                    listing.labels.as_mut()?.push(l);
                }
                listing.files.push(PathBuf::from(f));
            }
            _ => return None,
        }
    }
    if unlabeled {
        if listing.labels.as_ref().is_some_and(|l| !l.is_empty()) {
            return None;
        }
        listing.labels = None;
    }
    (!listing.files.is_empty()).then_some(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(root: &Path) -> Listing {
        for c in ["a", "b"] {
            std::fs::create_dir_all(root.join(c)).unwrap();
            std::fs::write(root.join(c).join("0.jpg"), b"x").unwrap();
        }
        Listing {
            files: vec![root.join("a/0.jpg"), root.join("b/0.jpg")],
            labels: Some(vec![0, 1]),
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_stored_listing_loads_back_while_its_folders_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        let l = listing(&root);
        let path = cache_path(&dir.path().join("cache"), "k");
        store(&path, "k", &root, &l).unwrap();
        assert_eq!(load(&path, "k"), Some(l));
        assert_eq!(load(&path, "other key"), None);
    }

    #[test]
    fn a_file_added_to_a_class_folder_invalidates_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        let l = listing(&root);
        let path = cache_path(dir.path(), "k");
        store(&path, "k", &root, &l).unwrap();
        // Folder times have a coarse grain on some file systems: make the change visible.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("b/1.jpg"), b"x").unwrap();
        assert_eq!(load(&path, "k"), None);
    }

    #[test]
    fn a_subfolder_added_to_a_class_of_subfolders_invalidates_the_cache() {
        // Class `c` holds its images in subfolders only (c/x/0.jpg): the class folder itself
        // is watched, so a new subfolder beside x/ is seen.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        let mut l = listing(&root);
        std::fs::create_dir_all(root.join("c/x")).unwrap();
        std::fs::write(root.join("c/x/0.jpg"), b"x").unwrap();
        l.files.push(root.join("c/x/0.jpg"));
        l.labels.as_mut().unwrap().push(2);
        l.class_names.push("c".into());
        assert!(watched_dirs(&root, &l).contains(&root.join("c")));
        let path = cache_path(dir.path(), "k");
        store(&path, "k", &root, &l).unwrap();
        assert_eq!(load(&path, "k"), Some(l));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(root.join("c/y")).unwrap();
        assert_eq!(load(&path, "k"), None);
    }

    #[test]
    fn a_damaged_cache_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        let l = listing(&root);
        let path = cache_path(dir.path(), "k");
        store(&path, "k", &root, &l).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("file\t1\t", "file\t7\t")).unwrap();
        assert_eq!(load(&path, "k"), None);
        std::fs::write(&path, &text[..text.len() - 5]).unwrap();
        assert_ne!(load(&path, "k"), Some(l));
    }
}

//! The index of shared files: what each online user shares, for `FILES` and `SEARCH`.
//!
//! Owns the per-user file lists. Each user's list is an immutable `Arc` swapped whole on
//! `SHARE`, so a listing or search holds the lock only to clone an `Arc` and scans with
//! no lock held: a search over 100,000 files never stalls another command. Each list
//! keeps its lower-case names joined in one string, and `SEARCH` scans [`Flat`]: every
//! user's joined names copied into one buffer, rebuilt by the first search after a
//! change. One scan of one buffer is a quarter of the CPU of 10,000 scans of 10,000
//! small buffers scattered over the heap (issue 14: 4-5 ms -> about 1 ms for 50,000
//! matches among 100,000 files; the rebuild is a copy of the names, well under that).
//! A rebuild waits ten times its own duration after the last one (searches meanwhile
//! scan the lists where they are), so SHARE/SEARCH churn cannot make every search copy
//! every name.
//! It must not talk to sockets or the store, and it is a leaf lock like the registry
//! (never held while taking another; the rebuild lock is only ever taken first).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use memchr::{memchr, memmem};

use crate::protocol::limits::{MAX_INDEX_FILES, MAX_INDEX_FILES_PER_ADDRESS};
use crate::protocol::server_msg::{FileEntry, SharedFile};

/// One user's shared files, with lower-case names precomputed for search.
struct UserFiles {
    /// The user's name as registered.
    user: String,
    /// The address the user is logged in from, for the per-address cap.
    ip: IpAddr,
    /// The files, sorted by lower-case name (then name).
    files: Vec<SharedFile>,
    /// The folded names ([`fold`]) in the order of `files`, each followed by [`SEPARATOR`], for
    /// `SEARCH` (a needle never holds the separator, so a match never spans two names).
    haystack: String,
    /// Where each file's lower-case name starts in `haystack`.
    starts: Vec<usize>,
}

/// The form names and needles are compared in: lower case one character at a time, with
/// the final sigma 'ς' as 'σ' and the dotted capital 'İ' as 'i'. `str::to_lowercase`
/// looks at a character's neighbours (a capital sigma lowers to 'ς' at the end of a
/// word, 'σ' elsewhere), so the needle `ΟΔΟΣ` and the name `ΟΔΟΣ.txt` lowered whole never
/// matched; and 'İ' lowers to 'i' plus a combining dot, which no typed `izmir` holds.
/// What you type must find the name it is part of.
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            'İ' => 'i'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

/// Ends each name in a user's `haystack`: a line feed, which no name (a part of a
/// protocol line) can hold.
const SEPARATOR: char = '\n';

/// What the lock guards: the lists and the counts the caps are checked against.
#[derive(Default)]
struct Inner {
    /// User key (the lower-case name) → that user's files, in listing order.
    by_user: BTreeMap<String, Arc<UserFiles>>,
    /// Files of all users together.
    total: usize,
    /// Files per source address.
    per_ip: HashMap<IpAddr, usize>,
    /// Counts the changes to `by_user`: a [`Flat`] of an older generation is stale.
    generation: u64,
    /// The last [`Flat`] built, current if its generation is `generation`.
    flat: Option<Arc<Flat>>,
}

/// A [`Flat`] is rebuilt at most once per this many times the last build took, so that
/// copying the names costs searches at most about a tenth of one core however often
/// the index changes. Between rebuilds, and while another search rebuilds, a search
/// scans each user's names where they are (no copy, no wait). SHARE/SEARCH churn from a
/// few accounts used to make every search copy every name (up to about 76 MB with the
/// index full of long names), one search at a time behind the rebuild lock, so everyone's
/// searches queued behind those copies.
const REBUILD_GAP: u32 = 10;

/// All lists at one generation, in listing order, with their lower-case names in one
/// buffer for `SEARCH`.
struct Flat {
    /// The generation of the index it was built from.
    generation: u64,
    /// When the build ended.
    built_at: Instant,
    /// How long the build took: the next one waits `REBUILD_GAP` times that.
    took: Duration,
    /// Every user's `haystack`, one after the other in listing order.
    haystack: Vec<u8>,
    /// Where each list's names start in `haystack`, with the list, in listing order.
    lists: Vec<(usize, Arc<UserFiles>)>,
}

impl Flat {
    fn build(generation: u64, lists: Vec<Arc<UserFiles>>) -> Flat {
        let started = Instant::now();
        let mut haystack = Vec::with_capacity(lists.iter().map(|l| l.haystack.len()).sum());
        let lists = lists
            .into_iter()
            .map(|list| {
                let at = haystack.len();
                haystack.extend_from_slice(list.haystack.as_bytes());
                (at, list)
            })
            .collect();
        let built_at = Instant::now();
        Flat {
            generation,
            built_at,
            took: built_at - started,
            haystack,
            lists,
        }
    }

    /// The list and the file holding the byte at `at` of `haystack`, searching the lists
    /// from `from` on (matches come in order, so each search walks forward once).
    fn file_at(&self, from: &mut usize, at: usize) -> (&UserFiles, &SharedFile) {
        while self
            .lists
            .get(*from + 1)
            .is_some_and(|(next, _)| *next <= at)
        {
            *from += 1;
        }
        let (start, list) = &self.lists[*from];
        let file = list.starts.partition_point(|&s| s <= at - start) - 1;
        (list, &list.files[file])
    }
}

/// Why `set` refused a list: the index would pass one of its caps.
#[derive(Debug, PartialEq, Eq)]
pub enum CapExceeded {
    /// All users together would share more than the total cap.
    Total(usize),
    /// Accounts from this address would share more than the per-address cap.
    PerAddress(usize),
}

/// The index: user key → that user's files, within a total and a per-address cap.
pub struct FileIndex {
    inner: Mutex<Inner>,
    /// Held while a [`Flat`] is built (never while `inner` is held), so concurrent
    /// searches after a change build one copy of the names, not one each (the others
    /// scan the lists meanwhile).
    rebuild: Mutex<()>,
    /// Most files in the index.
    max_total: usize,
    /// Most files from one address.
    max_per_ip: usize,
}

impl Default for FileIndex {
    fn default() -> Self {
        FileIndex::with_caps(MAX_INDEX_FILES, MAX_INDEX_FILES_PER_ADDRESS)
    }
}

impl FileIndex {
    /// An empty index with these caps (the defaults are in `protocol::limits`).
    pub fn with_caps(max_total: usize, max_per_ip: usize) -> FileIndex {
        FileIndex {
            inner: Mutex::default(),
            rebuild: Mutex::default(),
            max_total,
            max_per_ip,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces `user`'s shared files, unless the index would pass a cap (then the old
    /// list stays). The sorting happens before the lock is taken.
    pub fn set(
        &self,
        key: &str,
        user: &str,
        ip: IpAddr,
        files: Vec<SharedFile>,
    ) -> Result<(), CapExceeded> {
        let mut files: Vec<(SharedFile, String)> = files
            .into_iter()
            .map(|f| {
                let lower = fold(&f.name);
                (f, lower)
            })
            .collect();
        files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.name.cmp(&b.0.name)));
        let count = files.len();
        let mut haystack = String::with_capacity(files.iter().map(|(_, l)| l.len() + 1).sum());
        let mut starts = Vec::with_capacity(count);
        for (_, lower) in &files {
            starts.push(haystack.len());
            haystack.push_str(lower);
            haystack.push(SEPARATOR);
        }
        let entry = Arc::new(UserFiles {
            user: user.to_string(),
            ip,
            files: files.into_iter().map(|(f, _)| f).collect(),
            haystack,
            starts,
        });
        let mut inner = self.lock();
        let old = inner.by_user.get(key).map(|l| (l.ip, l.files.len()));
        let old_total = old.map_or(0, |(_, n)| n);
        let old_here = old
            .filter(|(old_ip, _)| *old_ip == ip)
            .map_or(0, |(_, n)| n);
        let total = inner.total - old_total + count;
        let here = inner.per_ip.get(&ip).copied().unwrap_or(0) - old_here + count;
        if total > self.max_total {
            return Err(CapExceeded::Total(self.max_total));
        }
        if here > self.max_per_ip {
            return Err(CapExceeded::PerAddress(self.max_per_ip));
        }
        Self::forget(&mut inner, key);
        inner.generation += 1;
        inner.total += count;
        *inner.per_ip.entry(ip).or_insert(0) += count;
        inner.by_user.insert(key.to_string(), entry);
        Ok(())
    }

    /// Forgets `user`'s files (they went offline).
    pub fn remove(&self, key: &str) {
        Self::forget(&mut self.lock(), key);
    }

    fn forget(inner: &mut Inner, key: &str) {
        let Some(old) = inner.by_user.remove(key) else {
            return;
        };
        let n = old.files.len();
        inner.generation += 1;
        inner.total -= n;
        if let Some(here) = inner.per_ip.get_mut(&old.ip) {
            *here -= n;
            if *here == 0 {
                inner.per_ip.remove(&old.ip);
            }
        }
    }

    /// How many files the index holds, all users together.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// The lists (all, or `only` one user key's), in listing order. Only `Arc`s are
    /// cloned under the lock; the map keeps them sorted, so nothing is sorted here.
    fn snapshot(&self, only: Option<&str>) -> Vec<Arc<UserFiles>> {
        let inner = self.lock();
        match only {
            Some(key) => inner.by_user.get(key).cloned().into_iter().collect(),
            None => inner.by_user.values().cloned().collect(),
        }
    }

    /// What a search scans: the [`Flat`] of the index as it is now (the one kept, or a
    /// new one), or, when the kept one is stale and may not be rebuilt yet (see
    /// [`REBUILD_GAP`]) or another search is rebuilding it, the lists themselves. The
    /// copy is made with the index unlocked, by one search at a time; nobody waits for it.
    fn source(&self) -> Source {
        {
            let inner = self.lock();
            match &inner.flat {
                Some(flat) if flat.generation == inner.generation => {
                    return Source::Flat(flat.clone());
                }
                Some(flat) if flat.built_at.elapsed() < flat.took * REBUILD_GAP => {
                    return Source::Lists(inner.by_user.values().cloned().collect());
                }
                _ => {}
            }
        }
        let _building = match self.rebuild.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Source::Lists(self.snapshot(None)),
        };
        let (generation, lists) = {
            let inner = self.lock();
            if let Some(flat) = inner
                .flat
                .as_ref()
                .filter(|f| f.generation == inner.generation)
            {
                return Source::Flat(flat.clone());
            }
            let lists: Vec<_> = inner.by_user.values().cloned().collect();
            (inner.generation, lists)
        };
        let flat = Arc::new(Flat::build(generation, lists));
        // Kept even if the index changed while it was built (then it is stale at once):
        // this search still gets a consistent picture, and its time says when the next
        // copy may be made.
        self.lock().flat = Some(flat.clone());
        Source::Flat(flat)
    }

    /// At most `limit` files from position `offset` of the whole listing (or of one
    /// user's: `only` is a user key), sorted by user then name (both case-insensitive),
    /// and how many files the listing has in all. Only the page is copied.
    pub fn list(&self, only: Option<&str>, offset: usize, limit: usize) -> (Vec<FileEntry>, usize) {
        let lists = self.snapshot(only);
        let total = lists.iter().map(|l| l.files.len()).sum();
        let page = lists
            .iter()
            .flat_map(|l| l.files.iter().map(move |f| (l, f)))
            .skip(offset)
            .take(limit)
            .map(|(l, f)| entry(&l.user, f))
            .collect();
        (page, total)
    }

    /// The first `limit` files whose name contains `text` (any case), and how many match.
    pub fn search(&self, text: &str, limit: usize) -> (Vec<FileEntry>, usize) {
        let needle = fold(text);
        if needle.contains(SEPARATOR) {
            return (Vec::new(), 0);
        }
        // One searcher for the whole query (`str::find` builds one per call).
        let finder = memmem::Finder::new(needle.as_bytes());
        let mut found = Vec::new();
        let mut total = 0;
        match self.source() {
            Source::Flat(flat) => {
                let mut list = 0;
                for_each_match(&flat.haystack, &finder, |at| {
                    total += 1;
                    if found.len() < limit {
                        let (owner, file) = flat.file_at(&mut list, at);
                        found.push(entry(&owner.user, file));
                    }
                });
            }
            Source::Lists(lists) => {
                for list in &lists {
                    for_each_match(list.haystack.as_bytes(), &finder, |at| {
                        total += 1;
                        if found.len() < limit {
                            let file = list.starts.partition_point(|&s| s <= at) - 1;
                            found.push(entry(&list.user, &list.files[file]));
                        }
                    });
                }
            }
        }
        (found, total)
    }
}

/// What one search scans (see [`FileIndex::source`]).
enum Source {
    /// Every list's names in one buffer.
    Flat(Arc<Flat>),
    /// The lists, each with its own names, in listing order.
    Lists(Vec<Arc<UserFiles>>),
}

/// Calls `each` with the position of every name in `hay` (names each ended by
/// [`SEPARATOR`]) that holds the needle, once per name. After a match the scan goes on
/// from the next name: a name holding the text twice counts once, and no match spans two
/// names (the needle holds no separator).
fn for_each_match(hay: &[u8], finder: &memmem::Finder<'_>, mut each: impl FnMut(usize)) {
    let mut pos = 0;
    while pos < hay.len() {
        let Some(at) = finder.find(&hay[pos..]).map(|i| pos + i) else {
            break;
        };
        each(at);
        pos = memchr(SEPARATOR as u8, &hay[at..]).map_or(hay.len(), |end| at + end + 1);
    }
}

fn entry(user: &str, file: &SharedFile) -> FileEntry {
    FileEntry {
        user: user.to_string(),
        size: file.size,
        name: file.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn files(names: &[&str]) -> Vec<SharedFile> {
        names
            .iter()
            .map(|n| SharedFile {
                size: n.len() as u64,
                name: n.to_string(),
            })
            .collect()
    }

    #[test]
    fn list_search_and_removal() {
        let index = FileIndex::default();
        index
            .set("bob", "Bob", IP, files(&["Zeta.TXT", "alpha.pdf"]))
            .unwrap();
        index
            .set("alice", "alice", IP, files(&["report.txt"]))
            .unwrap();
        let all: Vec<String> = index
            .list(None, 0, 100)
            .0
            .iter()
            .map(|e| format!("{} {}", e.user, e.name))
            .collect();
        assert_eq!(all, ["alice report.txt", "Bob alpha.pdf", "Bob Zeta.TXT"]);
        assert_eq!(index.list(Some("bob"), 0, 100).0.len(), 2);
        let (page, total) = index.list(None, 1, 1);
        assert_eq!((page[0].name.as_str(), total), ("alpha.pdf", 3));
        let (found, total) = index.search("TXT", 1);
        assert_eq!((found.len(), total), (1, 2));
        index.set("bob", "Bob", IP, files(&["only.bin"])).unwrap();
        assert_eq!(index.search("txt", 10).1, 1);
        index.remove("alice");
        assert_eq!(index.search("txt", 10).1, 0);
        assert!(index.list(Some("alice"), 0, 100).0.is_empty());
        assert_eq!(index.total(), 1);
    }

    #[test]
    fn a_search_counts_each_file_once_never_across_two_names_and_in_listing_order() {
        let index = FileIndex::default();
        index
            .set("zed", "Zed", IP, files(&["photo-photo.jpg", "x.bin"]))
            .unwrap();
        index
            .set("amy", "Amy", IP, files(&["xab", "cdx", "PHOTO.png"]))
            .unwrap();
        index.set("nobody", "nobody", IP, files(&[])).unwrap();
        let (found, total) = index.search("photo", 10);
        let shown: Vec<String> = found
            .iter()
            .map(|e| format!("{} {}", e.user, e.name))
            .collect();
        assert_eq!(total, 2, "photo-photo.jpg counts once");
        assert_eq!(shown, ["Amy PHOTO.png", "Zed photo-photo.jpg"]);
        // "xab" then "cdx": "bc" would match only across the two names.
        assert_eq!(index.search("bc", 10).1, 0);
        assert_eq!(index.search("b\nc", 10).1, 0);
        assert_eq!(index.search("x", 10).1, 3, "xab, cdx, x.bin");
        assert_eq!(index.search("", 10).1, 5, "every file once");
    }

    #[test]
    fn a_hundred_thousand_files_search_fine() {
        let index = FileIndex::default();
        for user in 0..10 {
            let names: Vec<String> = (0..10_000)
                .map(|i| format!("file-{user}-{i}.dat"))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let ip = IpAddr::from([127, 0, 0, user as u8]);
            index
                .set(&format!("u{user}"), &format!("u{user}"), ip, files(&refs))
                .unwrap();
        }
        let (found, total) = index.search("-7-12", 100);
        assert_eq!(total, 111, "file-7-12, file-7-120..129, file-7-1200..1299");
        assert_eq!(found.len(), 100);
    }

    #[test]
    fn a_needle_finds_the_name_it_was_copied_from_whatever_its_letters() {
        let index = FileIndex::default();
        let names = ["ΟΔΟΣ.txt", "οδος.txt", "ȺȺx.bin", "İzmir", "\u{212A}.txt"];
        index.set("a", "a", IP, files(&names)).unwrap();
        for name in names {
            let (found, _) = index.search(name, 10);
            assert!(found.iter().any(|f| f.name == name), "{name}: {found:?}");
        }
        assert_eq!(index.search("ΟΔΟΣ", 10).1, 2, "ς and σ are one letter");
        assert_eq!(index.search("IZMIR", 10).1, 1, "İ is an i");
        assert_eq!(index.search("ⱥX", 10).0[0].name, "ȺȺx.bin");
    }

    #[test]
    fn between_rebuilds_a_search_scans_the_lists_and_finds_the_same() {
        let index = FileIndex::default();
        index.set("b", "b", IP, files(&["Photo.jpg", "x"])).unwrap();
        index
            .set("a", "a", IP, files(&["aphoto", "photo2"]))
            .unwrap();
        assert_eq!(index.search("photo", 10).1, 3);
        // The last build "took an hour": the next may not come for ten.
        let pretend = |index: &FileIndex| {
            let mut inner = index.lock();
            let mut flat = Flat::build(inner.generation, inner.by_user.values().cloned().collect());
            flat.took = Duration::from_secs(3600);
            inner.flat = Some(Arc::new(flat));
        };
        pretend(&index);
        index.set("c", "c", IP, files(&["PHOTO-c"])).unwrap();
        assert!(matches!(index.source(), Source::Lists(_)), "no rebuild yet");
        let (found, total) = index.search("PHOTO", 10);
        let shown: Vec<String> = found
            .iter()
            .map(|e| format!("{} {}", e.user, e.name))
            .collect();
        assert_eq!(total, 4);
        assert_eq!(shown, ["a aphoto", "a photo2", "b Photo.jpg", "c PHOTO-c"]);
        let generation = index.lock().generation;
        assert_eq!(
            index.lock().flat.as_ref().map(|f| f.generation),
            Some(generation - 1),
            "still the old copy"
        );
    }

    #[test]
    fn caps_refuse_and_keep_the_old_list() {
        let index = FileIndex::with_caps(5, 3);
        let other = IpAddr::from([127, 0, 0, 2]);
        index.set("a", "a", IP, files(&["1", "2"])).unwrap();
        assert_eq!(
            index.set("b", "b", IP, files(&["3", "4"])),
            Err(CapExceeded::PerAddress(3))
        );
        // Replacing one's own list counts only the difference.
        index.set("a", "a", IP, files(&["1", "2", "3"])).unwrap();
        index.set("c", "c", other, files(&["x", "y"])).unwrap();
        assert_eq!(
            index.set("d", "d", IpAddr::from([127, 0, 0, 3]), files(&["z"])),
            Err(CapExceeded::Total(5))
        );
        assert_eq!(index.total(), 5);
        index.remove("a");
        index.set("b", "b", IP, files(&["3", "4"])).unwrap();
        assert_eq!(index.total(), 4);
    }

    #[test]
    fn searches_during_changes_see_one_whole_state_and_then_the_newest() {
        let index = std::sync::Arc::new(FileIndex::default());
        let names: Vec<String> = (0..1000).map(|i| format!("photo-{i}.jpg")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        index.set("base", "base", IP, files(&refs)).unwrap();
        let ten: Vec<String> = (0..10).map(|i| format!("x-photo-{i}")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        let writer = {
            let index = index.clone();
            let ten: Vec<SharedFile> = files(&ten);
            std::thread::spawn(move || {
                for round in 0..300 {
                    let list = if round % 2 == 0 {
                        ten.clone()
                    } else {
                        Vec::new()
                    };
                    index.set("x", "x", IP, list).unwrap();
                }
                index.remove("x");
            })
        };
        while !writer.is_finished() {
            let (found, total) = index.search("PHOTO", 5);
            assert!(total == 1000 || total == 1010, "a torn state: {total}");
            assert_eq!(found.len(), 5);
        }
        writer.join().unwrap();
        assert_eq!(
            index.search("photo", 5).1,
            1000,
            "the newest state once quiet"
        );
        assert_eq!(index.search("x-photo", 5).1, 0);
    }
}

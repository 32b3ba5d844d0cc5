//! The on-disk store: one file per allocated address, written so that a kill
//! at any instant leaves every file either absent or complete (see the
//! [module docs](super) for the argument).

use std::{
    ffi::OsStr,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::{Allocation, CorruptError, IpamError};

/// Sub-directory holding one file per allocation, named by its address.
pub(super) const ALLOCATIONS_DIR: &str = "allocations";
/// File whose `flock` marks the store as in use.
pub(super) const LOCK_FILE: &str = "lock";
/// File holding the last allocated address, where the next search starts.
pub(super) const CURSOR_FILE: &str = "cursor";
/// Prefix of files being written; any found on open are leftovers of a kill.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// Makes temporary names unique within the process; the pid makes them
/// unique across processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An open, locked store.
pub(super) struct Store {
    dir: PathBuf,
    allocations: PathBuf,
    /// Kept open to fsync after adding or removing an allocation file.
    allocations_dir: File,
    /// Held for the store's lifetime; dropping it releases the lock.
    _lock: Flock<File>,
}

/// What a freshly opened store holds.
pub(super) struct Loaded {
    pub(super) store: Store,
    pub(super) allocations: Vec<Allocation>,
    pub(super) cursor: Option<Ipv4Addr>,
}

impl Store {
    /// Creates `dir` if needed, locks it, deletes leftover temporary files
    /// and reads every allocation and the cursor.
    pub(super) fn open(dir: &Path) -> Result<Loaded, IpamError> {
        fs::create_dir_all(dir).map_err(io_err("creating IPAM directory", dir))?;
        let lock = lock(dir)?;
        let root_dir = File::open(dir).map_err(io_err("opening directory", dir))?;
        let allocations = dir.join(ALLOCATIONS_DIR);
        match fs::create_dir(&allocations) {
            Ok(()) => root_dir
                .sync_all()
                .map_err(io_err("syncing directory", dir))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating directory", &allocations)(e)),
        }
        let allocations_dir =
            File::open(&allocations).map_err(io_err("opening directory", &allocations))?;
        remove_temp_files(dir, &root_dir)?;
        remove_temp_files(&allocations, &allocations_dir)?;
        let store = Store {
            dir: dir.to_owned(),
            allocations,
            allocations_dir,
            _lock: lock,
        };
        let allocations = store.load_allocations()?;
        let cursor = store.load_cursor();
        Ok(Loaded {
            store,
            allocations,
            cursor,
        })
    }

    /// Path of the file recording the allocation of `ip`.
    pub(super) fn path_of(&self, ip: Ipv4Addr) -> PathBuf {
        self.allocations.join(ip.to_string())
    }

    /// Records `allocation` durably unless its address already has a file.
    /// Returns whether it did.
    pub(super) fn create(&self, allocation: &Allocation) -> Result<bool, IpamError> {
        let path = self.path_of(allocation.ip);
        let temp = self.allocations.join(temp_name());
        write_synced(&temp, &record(allocation))?;
        // `link` fails with EEXIST rather than replace, so an address that
        // somehow has a file is never handed out twice.
        let linked = fs::hard_link(&temp, &path);
        if let Err(error) = fs::remove_file(&temp) {
            tracing::warn!(path = %temp.display(), %error, "leaving a temporary file for the next open");
        }
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("linking allocation file", &path)(e)),
        }
        if let Err(e) = self.sync() {
            // Not durable: take it back so the caller sees a clean failure.
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "could not undo an unsynced allocation");
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Unlinks the file of `ip`; a missing file is not an error. Call
    /// [`Store::sync`] afterwards to make the removal durable.
    pub(super) fn unlink(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.path_of(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing allocation file", &path)(e)),
        }
    }

    /// Makes every link and unlink in the allocations directory durable.
    pub(super) fn sync(&self) -> Result<(), IpamError> {
        self.allocations_dir
            .sync_all()
            .map_err(io_err("syncing directory", &self.allocations))
    }

    /// Records `ip` as the cursor by writing a temporary file and renaming
    /// it over the old one, so the file is always one whole address. The
    /// directory is not synced: losing the newest cursor in a power cut only
    /// moves where the next search starts.
    pub(super) fn save_cursor(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let temp = self.dir.join(temp_name());
        let path = self.dir.join(CURSOR_FILE);
        write_synced(&temp, format!("{ip}\n").as_bytes())?;
        fs::rename(&temp, &path).map_err(|source| {
            let _ = fs::remove_file(&temp);
            IpamError::Io {
                op: "renaming cursor file into place",
                path,
                source,
            }
        })
    }

    fn load_allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        let mut allocations = Vec::new();
        let entries =
            fs::read_dir(&self.allocations).map_err(io_err("listing", &self.allocations))?;
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &self.allocations))?;
            let name = entry.file_name();
            let Some(ip) = name
                .to_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .filter(|ip| OsStr::new(&ip.to_string()) == name)
            else {
                tracing::warn!(path = %entry.path().display(), "ignoring a file not named by an address");
                continue;
            };
            let path = entry.path();
            let bytes = fs::read(&path).map_err(io_err("reading allocation file", &path))?;
            let allocation: Allocation =
                serde_json::from_slice(&bytes).map_err(|e| IpamError::Corrupt {
                    path: path.clone(),
                    source: CorruptError::Parse(e),
                })?;
            if allocation.ip != ip {
                return Err(IpamError::Corrupt {
                    path,
                    source: CorruptError::IpMismatch {
                        recorded: allocation.ip,
                    },
                });
            }
            allocations.push(allocation);
        }
        Ok(allocations)
    }

    /// The saved cursor; a missing or unreadable one just means the next
    /// search starts at the first block.
    fn load_cursor(&self) -> Option<Ipv4Addr> {
        let path = self.dir.join(CURSOR_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse() {
                Ok(ip) => Some(ip),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring an unreadable cursor");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an unreadable cursor");
                None
            }
        }
    }
}

/// Takes the store's exclusive lock without waiting. `flock` locks belong to
/// the open file description, so a second open in the same process is
/// refused just like one from another process, and the kernel drops the lock
/// when its holder dies, so a killed agent never leaves the store locked.
fn lock(dir: &Path) -> Result<Flock<File>, IpamError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("opening lock file", &path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => IpamError::Locked {
            dir: dir.to_owned(),
        },
        errno => IpamError::Io {
            op: "locking",
            path,
            source: errno.into(),
        },
    })
}

/// Deletes the `.tmp-*` files in `dir`: only the lock holder writes them,
/// and we hold the lock, so every one is a leftover of a killed writer.
fn remove_temp_files(dir: &Path, handle: &File) -> Result<(), IpamError> {
    let mut removed = 0_usize;
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("removing temporary file", &path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed temporary files left by a killed writer");
        handle
            .sync_all()
            .map_err(io_err("syncing directory", dir))?;
    }
    Ok(())
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it. On
/// failure the partial file is removed, best-effort.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IpamError> {
    let error = |source| IpamError::Io {
        op: "writing temporary file",
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| {
            let _ = fs::remove_file(path);
            error(source)
        })
}

/// The bytes of an allocation file: one JSON object and a newline.
fn record(allocation: &Allocation) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(allocation)
        .expect("an Allocation (an address and strings) always serializes");
    bytes.push(b'\n');
    bytes
}

fn temp_name() -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{n}", std::process::id())
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
    let path = path.to_owned();
    move |source| IpamError::Io { op, path, source }
}

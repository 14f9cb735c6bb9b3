//! The state directory, opened so that nothing placed in it can redirect a write.
//!
//! Anything the service's user runs (a provider program) can write into the state directory,
//! and `run --once` or `status` may run as root. So every state file is reached through the
//! directory's open descriptor (`openat`), with `O_NOFOLLOW` (a symbolic link is refused, never
//! followed), and is checked once open: a regular file with one link, owned by the user this
//! process runs as. The directory itself must be a real directory owned by that user and
//! closed to group and others; one owned by another user is refused whole, so a root run
//! never leaves root-owned files that lock the service out of its own state.
//!
//! A subdirectory (the inventory's) is reached the same way, relative to the state directory
//! and never through a link, and checked as the state directory is.
//!
//! The checks cost one `fstat` per file at open (the journal and the lock stay open), and a
//! file replaced whole (the snapshot, an inventory file) is written to a temporary file
//! created with `O_EXCL` and renamed over it: nothing here runs per journal write.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{DIR_MODE, FILE_MODE, LOCK};
use crate::state::StateError;

/// How a state file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// To read it; missing is `None`.
    Read,
    /// Read and append, created if missing: the journal.
    Append,
    /// Read and write, created if missing, never truncated by the open: the lock.
    ReadWrite,
}

/// An open state directory. Files are named relative to it, so the directory a file lands in
/// is the one checked at open, whatever happens to the path afterwards.
pub(super) struct StateDir {
    path: PathBuf,
    fd: File,
    /// The owner every file must have: this process's effective uid when opened for writing,
    /// `None` for `status`, which only reads (and may run as root over the service's files).
    owner: Option<u32>,
}

impl StateDir {
    /// Opens the directory for the store, creating it (0700) if missing. Refuses a symbolic
    /// link other than systemd's, anything but a directory, a directory owned by another user
    /// ([`StateError::NotOwner`], or [`StateError::Locked`] when its daemon is running, so
    /// `run --once` can hand its request over) and one group or others can enter.
    pub(super) fn open_for_writing(path: &Path) -> Result<StateDir, StateError> {
        let euid = rustix::process::geteuid().as_raw();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => check_dir_link(path)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(path)?,
            Err(source) => return Err(io_error(path)(source)),
        }
        let fd = match open_dir(path) {
            Ok(fd) => fd,
            // A non-root user cannot open another user's 0700 directory: say whose it is.
            Err(StateError::Io { path, source })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                return Err(match std::fs::metadata(&path) {
                    Ok(meta) if meta.uid() != euid => StateError::NotOwner {
                        dir: path,
                        owner: meta.uid(),
                        euid,
                    },
                    _ => StateError::Io { path, source },
                });
            }
            Err(e) => return Err(e),
        };
        let meta = fd.metadata().map_err(io_error(path))?;
        let dir = StateDir {
            path: path.to_owned(),
            fd,
            owner: Some(euid),
        };
        if meta.uid() != euid {
            return Err(dir.refuse_foreign(meta.uid(), euid));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StateError::Permissions {
                path: path.to_owned(),
                mode,
                want: DIR_MODE,
            });
        }
        Ok(dir)
    }

    /// Opens the directory to read it (`status`): `None` if it does not exist. Whoever owns
    /// it, reading changes nothing; the files are still never read through a link.
    pub(super) fn open_for_reading(path: &Path) -> Result<Option<StateDir>, StateError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => check_dir_link(path)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(path)(source)),
        }
        Ok(Some(StateDir {
            path: path.to_owned(),
            fd: open_dir(path)?,
            owner: None,
        }))
    }

    /// A second handle on the same directory (its own descriptor), checked the same way.
    pub(super) fn try_clone(&self) -> Result<StateDir, StateError> {
        Ok(StateDir {
            path: self.path.clone(),
            fd: self.fd.try_clone().map_err(io_error(&self.path))?,
            owner: self.owner,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub(super) fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` without following a link and checks what it opened. `None`: missing and
    /// `access` is [`Access::Read`].
    pub(super) fn open(&self, name: &str, access: Access) -> Result<Option<File>, StateError> {
        Ok(self.open_checked(name, access)?.map(|(file, _)| file))
    }

    /// Reads the whole of `name` (opened and checked as [`StateDir::open`] does), in one read
    /// of the size it had when opened: for a file only ever replaced whole (renamed over,
    /// never written in place), so that size is all of it. `None`: missing. Four system
    /// calls a file, where reading to EOF takes six: 20,000 inventory files load at start.
    pub(super) fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let Some((mut file, meta)) = self.open_checked(name, Access::Read)? else {
            return Ok(None);
        };
        let size = usize::try_from(meta.len())
            .map_err(|_| io_error(&self.file_path(name))(io::ErrorKind::FileTooLarge.into()))?;
        let mut bytes = vec![0; size];
        file.read_exact(&mut bytes)
            .map_err(io_error(&self.file_path(name)))?;
        Ok(Some(bytes))
    }

    fn open_checked(
        &self,
        name: &str,
        access: Access,
    ) -> Result<Option<(File, Metadata)>, StateError> {
        let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
            // A FIFO put here would block the open forever; with NONBLOCK it opens and is
            // then refused as not a regular file. No effect on a regular file's reads and writes.
            | OFlags::NONBLOCK
            | match access {
                Access::Read => OFlags::RDONLY,
                Access::Append => OFlags::RDWR | OFlags::APPEND | OFlags::CREATE,
                Access::ReadWrite => OFlags::RDWR | OFlags::CREATE,
            };
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(FILE_MODE)) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) if access == Access::Read => return Ok(None),
            Err(errno) => return Err(self.explain_open_error(name, errno)),
        };
        let meta = fd.metadata().map_err(io_error(&self.file_path(name)))?;
        self.check_file(name, &meta)?;
        Ok(Some((fd, meta)))
    }

    /// A fresh `name` (0600), after removing a stale one: `O_EXCL` never opens what is there,
    /// link or file, so nothing is truncated through a link.
    pub(super) fn create_new(&self, name: &str) -> Result<File, StateError> {
        self.remove(name)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(FILE_MODE))
            .map(File::from)
            .map_err(|errno| io_error(&self.file_path(name))(errno.into()))
    }

    /// Removes `name` if present (a link is removed, not what it points to).
    pub(super) fn remove(&self, name: &str) -> Result<(), StateError> {
        self.remove_if_present(name).map(|_| ())
    }

    /// Removes `name` if present, saying whether it was.
    pub(super) fn remove_if_present(&self, name: &str) -> Result<bool, StateError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(io_error(&self.file_path(name))(errno.into())),
        }
    }

    /// Replaces `name` whole, atomically: `tmp` (0600, created new: never written through a
    /// link), fsync, rename over `name`, fsync the directory. `contents` writes the whole
    /// file; whatever it locks is released before the fsyncs. A crash leaves the old `name`
    /// or the new one, and at worst a stale `tmp` for the next open to remove.
    pub(super) fn replace(
        &self,
        name: &str,
        tmp: &str,
        contents: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let written = self.create_new(tmp).and_then(|file| {
            let mut out = BufWriter::new(&file);
            contents(&mut out)
                .and_then(|()| out.flush())
                .and_then(|()| {
                    drop(out);
                    file.sync_all()
                })
                .map_err(io_error(&self.file_path(tmp)))
        });
        if let Err(e) = written {
            let _ = self.remove(tmp);
            return Err(e);
        }
        self.rename(tmp, name)?;
        self.sync()
    }

    /// Opens the subdirectory `name`, never through a symbolic link: `None` when missing,
    /// unless `create` (opened to write only) makes it, 0700. Opened to write (the store's
    /// own directory), it is checked like the state directory: owned by this user, closed to
    /// group and others. Opened to read (`status`, whoever runs it), it is refused only as a
    /// link or not a directory.
    pub(super) fn open_subdir(
        &self,
        name: &str,
        create: bool,
    ) -> Result<Option<StateDir>, StateError> {
        let path = self.file_path(name);
        let mut created = false;
        if create && self.owner.is_some() {
            match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) => created = true,
                Err(Errno::EXIST) => {}
                Err(errno) => return Err(io_error(&path)(errno.into())),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) if !created => return Ok(None),
            // A link gives one or the other, depending on which check the kernel makes first.
            Err(errno @ (Errno::LOOP | Errno::NOTDIR)) => {
                return Err(self.explain_subdir_error(name, errno));
            }
            Err(errno) => return Err(io_error(&path)(errno.into())),
        };
        if created {
            // Its entry must survive a crash as much as the files later put in it.
            self.sync()?;
        }
        let dir = StateDir {
            path,
            fd,
            owner: self.owner,
        };
        let Some(euid) = dir.owner else {
            return Ok(Some(dir));
        };
        let meta = dir.fd.metadata().map_err(io_error(&dir.path))?;
        if meta.uid() != euid {
            return Err(StateError::Unsafe {
                reason: format!(
                    "it belongs to uid {}, not to uid {euid} that runs this; if it is the service's own state, `chown -R {euid} {}`",
                    meta.uid(),
                    dir.path.display()
                ),
                path: dir.path,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StateError::Permissions {
                path: dir.path,
                mode,
                want: DIR_MODE,
            });
        }
        Ok(Some(dir))
    }

    /// The names in this directory, `.` and `..` left out. A name that is not UTF-8 comes
    /// converted lossily, so it matches no name the store writes.
    pub(super) fn names(&self) -> Result<Vec<String>, StateError> {
        let failed = |errno: Errno| io_error(&self.path)(errno.into());
        let entries = rustix::fs::Dir::read_from(&self.fd).map_err(failed)?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(names)
    }

    /// Renames `from` over `to` in this directory (whatever `to` was, link included, is
    /// replaced, never written through).
    pub(super) fn rename(&self, from: &str, to: &str) -> Result<(), StateError> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|errno| io_error(&self.file_path(to))(errno.into()))
    }

    /// Makes the directory's entries (new names, renames) durable.
    pub(super) fn sync(&self) -> Result<(), StateError> {
        self.fd.sync_all().map_err(io_error(&self.path))
    }

    /// Takes the exclusive lock (flock: released by the kernel when the process dies, so a
    /// `kill -9` leaves no stale lock) and writes our PID into it for the next one to name.
    pub(super) fn take_lock(&self) -> Result<File, StateError> {
        let path = self.file_path(LOCK);
        let Some(mut file) = self.open(LOCK, Access::ReadWrite)? else {
            return Err(io_error(&path)(io::ErrorKind::NotFound.into()));
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    dir: self.path.clone(),
                    pid: self.read_holder_pid(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io_error(&path)(source)),
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        Ok(file)
    }

    /// The holder writes its PID just after locking: give it a moment if we came in between.
    fn read_holder_pid(&self) -> Option<u32> {
        for _ in 0..5 {
            let mut text = String::new();
            let pid = self
                .open(LOCK, Access::Read)
                .ok()
                .flatten()
                .and_then(|mut f| f.read_to_string(&mut text).ok())
                .and_then(|_| text.trim().parse().ok());
            if pid.is_some() {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The refusal for a directory owned by `owner`, not us. When its own daemon holds the
    /// lock, that is said instead, so `run --once` hands its request to it: the probe opens
    /// the lock read-only and takes a shared lock for an instant, writing nothing.
    fn refuse_foreign(self, owner: u32, euid: u32) -> StateError {
        let probe = StateDir {
            owner: None,
            ..self
        };
        if let Ok(Some(lock)) = probe.open(LOCK, Access::Read)
            && let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock_shared()
        {
            return StateError::Locked {
                dir: probe.path.clone(),
                pid: probe.read_holder_pid(),
            };
        }
        StateError::NotOwner {
            dir: probe.path,
            owner,
            euid,
        }
    }

    /// What an opened `name` must be: a regular file with one link (a second name could be a
    /// hard link to a file elsewhere), owned by us when we write.
    fn check_file(&self, name: &str, meta: &Metadata) -> Result<(), StateError> {
        let refuse = |reason: String| StateError::Unsafe {
            path: self.file_path(name),
            reason,
        };
        if !meta.file_type().is_file() {
            return Err(refuse("it is not a regular file; move it away".to_owned()));
        }
        let Some(euid) = self.owner else {
            return Ok(());
        };
        if meta.uid() != euid {
            return Err(refuse(format!(
                "it belongs to uid {}, not to uid {euid} that runs this; if it is the service's own state, `chown {euid} {}`",
                meta.uid(),
                self.file_path(name).display()
            )));
        }
        if meta.nlink() > 1 {
            return Err(refuse(format!(
                "it has {} hard links, a state file has one; remove the other names, or move it away",
                meta.nlink()
            )));
        }
        Ok(())
    }

    /// Why the subdirectory `name` could not be opened as one.
    fn explain_subdir_error(&self, name: &str, errno: Errno) -> StateError {
        let path = self.file_path(name);
        let reason = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => {
                "it is a symbolic link, and state directories are never entered through one; remove it (something else put it there)"
            }
            Ok(_) => "it is not a directory; move it away",
            Err(_) => return io_error(&path)(errno.into()),
        };
        StateError::Unsafe {
            path,
            reason: reason.to_owned(),
        }
    }

    /// Turns a failed open of `name` into the reason a user can act on.
    fn explain_open_error(&self, name: &str, errno: Errno) -> StateError {
        let path = self.file_path(name);
        let unsafe_because = |reason: String| StateError::Unsafe {
            path: path.clone(),
            reason,
        };
        if errno == Errno::LOOP {
            return unsafe_because(
                "it is a symbolic link, and state files are never opened through one; remove it (something else put it there)"
                    .to_owned(),
            );
        }
        // Opened as root over a FIFO or the like, or refused as another user's file: say which.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_file() => {
                unsafe_because("it is not a regular file; move it away".to_owned())
            }
            Ok(meta) => match self.check_file(name, &meta) {
                Err(e) => e,
                Ok(()) => io_error(&path)(errno.into()),
            },
            Err(_) => io_error(&path)(errno.into()),
        }
    }
}

/// The one symbolic link accepted in place of the state directory: the one systemd makes for
/// `StateDirectory=` under `DynamicUser=yes`, `NAME -> private/NAME` (the directory itself is
/// then checked like any other). Any other link is refused: whoever made it chooses where the
/// state goes.
fn check_dir_link(path: &Path) -> Result<(), StateError> {
    let target = std::fs::read_link(path).map_err(io_error(path))?;
    let name = path.file_name().unwrap_or_else(|| OsStr::new(""));
    let relative = Path::new("private").join(name);
    let absolute = path.parent().map(|p| p.join(&relative));
    if target == relative || Some(&target) == absolute.as_ref() {
        return Ok(());
    }
    Err(StateError::Unsafe {
        path: path.to_owned(),
        reason: format!(
            "the state directory is a symbolic link (to {}); set `[state] dir` to the directory itself",
            target.display()
        ),
    })
}

/// Creates a missing state directory, and its missing parents, owner-only.
fn create_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_error(path))?;
    // The new directory's entry in its parent must survive a crash, or the journal in it goes
    // too.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_error(parent))?;
    }
    Ok(())
}

fn open_dir(path: &Path) -> Result<File, StateError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(path.as_os_str().as_bytes(), flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOTDIR) => Err(StateError::Unsafe {
            path: path.to_owned(),
            reason:
                "it is not a directory; set `[state] dir` to a directory (it is created if missing)"
                    .to_owned(),
        }),
        Err(errno) => Err(io_error(path)(errno.into())),
    }
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

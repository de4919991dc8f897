//! Persistent state: an embedded, transactional database (redb) under
//! `NETVLAN_STATE_DIR` (default `/var/lib/netvlan`).
//!
//! Two layers of safety:
//! - every command holds an exclusive `flock` on `STATE_DIR/lock` from
//!   its first read to its last write, so concurrent `netvlan` invocations
//!   run one after the other and never hand out the same address twice;
//!   readers ([`Store::open_within`]: `stats`, scrapes, the daemon's page
//!   and API reads) share the lock and open the database read-only, so they
//!   never write or fsync it and never see a half-done command;
//! - every write is one redb transaction, so a crash or SIGKILL leaves
//!   either the old state or the new one, never a mix.
//!
//! One durable commit per command: the records are written with redb's
//! Immediate durability (fsynced), the journal of the command in flight is
//! not. It only has to survive the process (SIGKILL): a power cut removes
//! every kernel object it describes (links, pins in bpffs). So it lives in
//! its own file, `STATE_DIR/journal`, replaced by rename (a killed process
//! leaves the old file or the new one) and never fsynced. Each journal
//! carries the generation of the commit that will own what it describes;
//! [`Store::commit_network`] stores that generation with the record, so a
//! journal that outlived its commit (its removal lost to a power cut) is
//! recognised as spent and never undoes what the record owns.
//!
//! Records are stored as JSON values keyed by name: readable with any redb
//! tool, and tolerant of fields added by later versions.
//!
//! State belongs to a network namespace (see [`NetnsScope`]): the initial
//! namespace's records are keyed by their plain name (as before namespaces
//! were recorded), any other's by `SCOPE/NAME`. A store only ever sees and
//! writes the records, and the journal, of the namespace it was opened in.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use crate::sys::netns::NetnsScope;

/// Default `NETVLAN_STATE_DIR`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netvlan";

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
/// Operations of the command in flight (see `control::operation`): what it may
/// have created in the kernel, written before it creates it.
const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");
const PENDING: &str = "pending";
/// The generation of each namespace's last commit, by journal key.
const GENERATIONS: TableDefinition<&str, u64> = TableDefinition::new("generations");
/// The journal file inside the state directory (see the module doc).
const JOURNAL_FILE: &str = "journal";
/// How many write transactions the database has committed, under
/// [`CHANGES_KEY`]: a reader that keeps what it decoded (the daemon's
/// scrapes) decodes again only when this moved.
const CHANGES: TableDefinition<&str, u64> = TableDefinition::new("changes");
const CHANGES_KEY: &str = "commits";

/// The journal file: per namespace (journal key), the intents of its
/// command in flight and the generation its commit will have.
#[derive(Default, serde::Deserialize, Serialize)]
struct JournalFile {
    #[serde(default)]
    pending: std::collections::BTreeMap<String, Pending>,
}

#[derive(serde::Deserialize, Serialize)]
struct Pending {
    generation: u64,
    intents: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to the state directory {dir} (opening {path}); netvlan keeps its state there: make it writable, or point NETVLAN_STATE_DIR (--state-dir) at a writable directory")]
    NotWritable {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("cannot identify the current network namespace")]
    Netns(#[source] std::io::Error),
    #[error("state database {path} was opened read-only; this command needs it writable")]
    ReadOnly { path: PathBuf },
    #[error("cannot write the journal {path}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record '{key}' in {path}")]
    Corrupt {
        key: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The state database, locked for the lifetime of this value, seen from
/// one network namespace.
pub struct Store {
    db: Db,
    path: PathBuf,
    /// The journal file.
    journal_path: PathBuf,
    /// Durable (Immediate) redb commits made through this store.
    durable_commits: std::sync::atomic::AtomicUsize,
    /// Network records decoded: a command that reads a network of
    /// thousands of endpoints more than once pays for it each time.
    records_decoded: std::sync::atomic::AtomicUsize,
    /// What the namespace answers to; new records go under the first.
    scopes: Vec<NetnsScope>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// A writer's database, or a reader's (which never writes the file).
enum Db {
    Write(redb::Database),
    Read(redb::ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
    }
}

/// Which `flock` an opener takes.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    /// Exclusive, the database opened for writing.
    Write,
    /// Shared, the database opened read-only.
    Read,
}

/// The store key of network `name` in `scope`.
fn network_key(scope: &NetnsScope, name: &str) -> String {
    match scope.key_prefix() {
        None => name.to_string(),
        Some(prefix) => format!("{prefix}/{name}"),
    }
}

/// The store key of `scope`'s journal.
fn journal_key(scope: &NetnsScope) -> String {
    match scope.key_prefix() {
        None => PENDING.to_string(),
        Some(prefix) => format!("{PENDING}@{prefix}"),
    }
}

/// The scope prefix of a network key (`None`: the initial namespace's).
fn key_scope(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(prefix, _)| prefix)
}

/// The database file inside the state directory.
const DB_FILE: &str = "netvlan.redb";

impl Store {
    /// Whether `state_dir` holds a database: commands that only read the
    /// state check this rather than create an empty one.
    pub fn exists(state_dir: &Path) -> bool {
        state_dir.join(DB_FILE).exists()
    }

    /// Opens (creating if needed) the database, waiting for the lock, for
    /// the calling thread's network namespace.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open_locking(state_dir, None, None, Access::Write)
            .map(|s| s.expect("a blocking lock always comes"))
    }

    /// As [`Store::open`], for the namespace known by `scopes` (the first
    /// one files new records).
    pub fn open_scoped(state_dir: &Path, scopes: Vec<NetnsScope>) -> Result<Self, StoreError> {
        assert!(!scopes.is_empty(), "a store needs a scope");
        Self::open_locking(state_dir, None, Some(scopes), Access::Write)
            .map(|s| s.expect("a blocking lock always comes"))
    }

    /// A reader's open: gives up (`Ok(None)`) if a command still holds
    /// the lock after `patience` (for readers such as `stats` that must not
    /// hang behind a long command). Readers share the lock with each other
    /// (a writer waits for them) and open the database read-only: the
    /// file is neither written nor fsynced; the store's writes fail with
    /// [`StoreError::ReadOnly`]. A database a writer left without a clean
    /// close (SIGKILL) needs a repair only a writer may do: then this
    /// opens as a writer, within the same patience.
    pub fn open_within(
        state_dir: &Path,
        patience: std::time::Duration,
    ) -> Result<Option<Self>, StoreError> {
        Self::open_within_scoped(state_dir, patience, None)
    }

    /// As [`Store::open_within`], for the namespace known by `scopes` when
    /// given (a long-lived reader that knows them already: finding a
    /// namespace's names looks at every named namespace of the host).
    pub fn open_within_scoped(
        state_dir: &Path,
        patience: std::time::Duration,
        scopes: Option<Vec<NetnsScope>>,
    ) -> Result<Option<Self>, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        if state_dir.join(DB_FILE).exists() {
            match Self::open_locking(state_dir, Some(patience), scopes.clone(), Access::Read) {
                Err(StoreError::Database { source, .. })
                    if matches!(*source, redb::Error::RepairAborted) =>
                {
                    tracing::debug!("the state database needs a repair: opening it as a writer");
                }
                done => return done,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        Self::open_locking(state_dir, Some(left), scopes, Access::Write)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the namespace answers to, the scope new records go under first.
    pub fn scopes(&self) -> &[NetnsScope] {
        &self.scopes
    }

    /// Write transactions committed to the database so far (by any
    /// namespace): unchanged means every record reads as it did.
    pub fn changes(&self) -> Result<u64, StoreError> {
        let Some(table) = self.read_table(CHANGES)? else {
            return Ok(0);
        };
        let count = table
            .get(CHANGES_KEY)
            .map_err(|e| self.db_err()(e.into()))?;
        Ok(count.map_or(0, |c| c.value()))
    }

    /// `definition`'s table as of now, `None` before anything wrote it.
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
        let err = self.db_err();
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        match txn.open_table(definition) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(err(e.into())),
        }
    }

    fn open_locking(
        state_dir: &Path,
        patience: Option<std::time::Duration>,
        scopes: Option<Vec<NetnsScope>>,
        access: Access,
    ) -> Result<Option<Self>, StoreError> {
        let scopes = match scopes {
            Some(scopes) => scopes,
            None => NetnsScope::current().map_err(StoreError::Netns)?,
        };
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.into(),
            source,
        })?;
        let lock_path = state_dir.join("lock");
        let lock_err = |source: std::io::Error| StoreError::Lock {
            path: lock_path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::NotWritable {
                dir: state_dir.into(),
                path: lock_path.clone(),
                source,
            })?;
        let (blocking, nonblocking) = match access {
            Access::Write => (
                nix::fcntl::FlockArg::LockExclusive,
                nix::fcntl::FlockArg::LockExclusiveNonblock,
            ),
            Access::Read => (
                nix::fcntl::FlockArg::LockShared,
                nix::fcntl::FlockArg::LockSharedNonblock,
            ),
        };
        let lock = match patience {
            None => nix::fcntl::Flock::lock(file, blocking)
                .map_err(|(_, errno)| lock_err(errno.into()))?,
            Some(patience) => {
                let deadline = std::time::Instant::now() + patience;
                let mut file = file;
                loop {
                    match nix::fcntl::Flock::lock(file, nonblocking) {
                        Ok(lock) => break lock,
                        Err((back, nix::errno::Errno::EWOULDBLOCK))
                            if std::time::Instant::now() < deadline =>
                        {
                            file = back;
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                        Err((_, errno)) => return Err(lock_err(errno.into())),
                    }
                }
            }
        };
        let path = state_dir.join(DB_FILE);
        let db_err = |e: redb::DatabaseError| StoreError::Database {
            path: path.clone(),
            source: Box::new(e.into()),
        };
        let db = match access {
            Access::Write => Db::Write(redb::Database::create(&path).map_err(db_err)?),
            Access::Read => Db::Read(redb::ReadOnlyDatabase::open(&path).map_err(db_err)?),
        };
        Ok(Some(Store {
            db,
            path,
            journal_path: state_dir.join(JOURNAL_FILE),
            durable_commits: Default::default(),
            records_decoded: Default::default(),
            scopes,
            _lock: lock,
        }))
    }

    fn db_err(&self) -> impl Fn(redb::Error) -> StoreError + '_ {
        |e| StoreError::Database {
            path: self.path.clone(),
            source: Box::new(e),
        }
    }

    /// Whether a network key belongs to this store's namespace.
    fn owns(&self, key: &str) -> bool {
        let prefix = key_scope(key);
        self.scopes
            .iter()
            .any(|scope| scope.key_prefix().as_deref() == prefix)
    }

    /// The key `name` is stored under in this namespace, if it is stored.
    fn existing_key(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        name: &str,
    ) -> Result<Option<String>, redb::StorageError> {
        for scope in &self.scopes {
            let key = network_key(scope, name);
            if table.get(key.as_str())?.is_some() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Every network record of this namespace, by name.
    pub fn networks<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let err = self.db_err();
        let Some(table) = self.read_table(NETWORKS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            if self.owns(key.value()) {
                out.push(self.decode_record(key.value(), value.value())?);
            }
        }
        Ok(out)
    }

    /// Network `name` and every other record of this namespace, from one
    /// read: a connect needs both, and decoding (or copying) a network of
    /// thousands of endpoints twice was most of what grew with its size.
    pub fn network_among<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<(T, Vec<T>)>, StoreError> {
        let err = self.db_err();
        let Some(table) = self.read_table(NETWORKS)? else {
            return Ok(None);
        };
        let Some(wanted) = self.existing_key(&table, name).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let mut others: Vec<T> = Vec::new();
        let mut found = None;
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            if !self.owns(key.value()) {
                continue;
            }
            let record = self.decode_record(key.value(), value.value())?;
            if key.value() == wanted {
                found = Some(record);
            } else {
                others.push(record);
            }
        }
        Ok(found.map(|record| (record, others)))
    }

    pub fn network<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let err = self.db_err();
        let Some(table) = self.read_table(NETWORKS)? else {
            return Ok(None);
        };
        let Some(key) = self.existing_key(&table, name).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let value = table.get(key.as_str()).map_err(|e| err(e.into()))?;
        value
            .map(|v| self.decode_record(name, v.value()))
            .transpose()
    }

    /// Where a record named `name` is written: its current key, or the
    /// namespace's first scope for a new one.
    fn write_key(
        &self,
        table: &redb::Table<&str, &[u8]>,
        name: &str,
    ) -> Result<String, redb::StorageError> {
        Ok(self
            .existing_key(table, name)?
            .unwrap_or_else(|| network_key(&self.scopes[0], name)))
    }

    /// A network record, counted (`records_decoded`).
    fn decode_record<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        self.records_decoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.decode(key, bytes)
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            key: key.into(),
            path: self.path.clone(),
            source,
        })
    }

    /// Writes (inserts or replaces) one network record atomically.
    pub fn put_network<T: Serialize>(&self, name: &str, record: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).expect("network records always serialise");
        self.write(|table| {
            let key = self.write_key(table, name)?;
            table.insert(key.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Removes one network record atomically.
    pub fn delete_network(&self, name: &str) -> Result<(), StoreError> {
        self.write(|table| {
            for scope in &self.scopes {
                table.remove(network_key(scope, name).as_str())?;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        self.write_tables(|networks, _| f(networks))
    }

    /// One transaction over both tables.
    fn write_tables(
        &self,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        self.write_transaction(|txn| {
            let mut networks = txn.open_table(NETWORKS)?;
            let mut journal = txn.open_table(JOURNAL)?;
            f(&mut networks, &mut journal)?;
            Ok(())
        })
    }

    /// One durable (fsynced) write transaction, counted.
    fn write_transaction(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let err = self.db_err();
        let Db::Write(db) = &self.db else {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        f(&txn).map_err(&err)?;
        {
            let mut changes = txn.open_table(CHANGES).map_err(|e| err(e.into()))?;
            let count = changes
                .get(CHANGES_KEY)
                .map_err(|e| err(e.into()))?
                .map_or(0, |c| c.value());
            changes
                .insert(CHANGES_KEY, count + 1)
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.durable_commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many durable (fsynced) commits this store has made: a command
    /// makes one.
    pub fn durable_commits(&self) -> usize {
        self.durable_commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The generation of the last [`Store::commit_network`] of the
    /// namespace whose journal key is `key` (0: none yet).
    fn generation(&self, key: &str) -> Result<u64, StoreError> {
        let err = self.db_err();
        let Some(table) = self.read_table(GENERATIONS)? else {
            return Ok(0);
        };
        let value = table.get(key).map_err(|e| err(e.into()))?;
        Ok(value.map(|v| v.value()).unwrap_or(0))
    }

    /// The journal file as it is (empty when there is none).
    fn read_journal_file(&self) -> Result<JournalFile, StoreError> {
        match std::fs::read(&self.journal_path) {
            // Only a power cut tears it (a killed process leaves the old
            // file or the new one: it is replaced by rename), and a power
            // cut removed every kernel object it names: it is spent.
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    path = %self.journal_path.display(),
                    "the journal does not parse ({e}): torn by a power cut, which removed what it names; dropped"
                );
                JournalFile::default()
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JournalFile::default()),
            Err(source) => Err(StoreError::Journal {
                path: self.journal_path.clone(),
                source,
            }),
        }
    }

    /// Replaces the journal file by rename (a SIGKILL leaves the old one or
    /// the new one), without fsync: see the module doc.
    fn write_journal_file(&self, file: &JournalFile) -> Result<(), StoreError> {
        if let Db::Read(_) = self.db {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        }
        let failed = |source| StoreError::Journal {
            path: self.journal_path.clone(),
            source,
        };
        if file.pending.is_empty() {
            return match std::fs::remove_file(&self.journal_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
                _ => Ok(()),
            };
        }
        let bytes = serde_json::to_vec(file).expect("journals always serialise");
        let temp = self.journal_path.with_extension("new");
        std::fs::write(&temp, bytes).map_err(failed)?;
        std::fs::rename(&temp, &self.journal_path).map_err(failed)
    }

    /// Removes this namespace's entries from the journal file.
    fn clear_journal_file(&self) -> Result<(), StoreError> {
        let mut file = self.read_journal_file()?;
        let before = file.pending.len();
        for scope in &self.scopes {
            file.pending.remove(&journal_key(scope));
        }
        if file.pending.len() == before {
            return Ok(());
        }
        self.write_journal_file(&file)
    }

    /// Whether the journal table (where versions before the journal file
    /// kept it) holds an entry of this namespace.
    fn has_table_journal(&self) -> Result<bool, StoreError> {
        let err = self.db_err();
        let Some(table) = self.read_table(JOURNAL)? else {
            return Ok(false);
        };
        for scope in &self.scopes {
            if table
                .get(journal_key(scope).as_str())
                .map_err(|e| err(e.into()))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The intents of an interrupted command, oldest first (empty when the
    /// last command finished). A journal whose commit was made (its
    /// removal lost to a power cut) is spent and not returned.
    pub fn journal<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let mut intents = Vec::new();
        // Left by a version that kept the journal in the database.
        if let Some(table) = self.read_table(JOURNAL)? {
            let err = self.db_err();
            for scope in &self.scopes {
                let key = journal_key(scope);
                let value = table.get(key.as_str()).map_err(|e| err(e.into()))?;
                if let Some(v) = value {
                    intents.extend(self.decode::<Vec<T>>(&key, v.value())?);
                }
            }
        }
        let mut file = self.read_journal_file()?;
        for scope in &self.scopes {
            let key = journal_key(scope);
            let Some(pending) = file.pending.remove(&key) else {
                continue;
            };
            let generation = self.generation(&key)?;
            if pending.generation <= generation {
                tracing::debug!(
                    "journal {key} of generation {} is spent (the store is at {generation})",
                    pending.generation
                );
                continue;
            }
            intents.extend(serde_json::from_value::<Vec<T>>(pending.intents).map_err(
                |source| StoreError::Corrupt {
                    key,
                    path: self.journal_path.clone(),
                    source,
                },
            )?);
        }
        Ok(intents)
    }

    /// Removes this namespace's journal entries (inside a transaction).
    fn remove_journal(
        &self,
        journal: &mut redb::Table<&str, &[u8]>,
    ) -> Result<(), redb::StorageError> {
        for scope in &self.scopes {
            journal.remove(journal_key(scope).as_str())?;
        }
        Ok(())
    }

    /// Replaces the journal before the kernel change it announces: it
    /// survives this process (SIGKILL), not a power cut, and costs no
    /// fsync (see the module doc).
    pub fn set_journal<T: Serialize>(&self, intents: &[T]) -> Result<(), StoreError> {
        let intents = serde_json::to_value(intents).expect("intents always serialise");
        let key = journal_key(&self.scopes[0]);
        let generation = self.generation(&key)? + 1;
        let mut file = self.read_journal_file()?;
        for scope in &self.scopes[1..] {
            file.pending.remove(&journal_key(scope));
        }
        file.pending.insert(
            key,
            Pending {
                generation,
                intents,
            },
        );
        self.write_journal_file(&file)
    }

    pub fn clear_journal(&self) -> Result<(), StoreError> {
        if self.has_table_journal()? {
            self.write_tables(|_, journal| self.remove_journal(journal))?;
        }
        self.clear_journal_file()
    }

    /// Writes a network and spends the journal in one transaction (the
    /// command's one durable commit): the command's kernel changes become
    /// owned by the record atomically. The journal file is removed after;
    /// a journal that outlives this commit is spent by its generation.
    pub fn commit_network<T: Serialize>(&self, name: &str, record: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).expect("network records always serialise");
        let journal_key = journal_key(&self.scopes[0]);
        let generation = self.generation(&journal_key)? + 1;
        self.write_transaction(|txn| {
            let mut networks = txn.open_table(NETWORKS)?;
            let mut journal = txn.open_table(JOURNAL)?;
            let mut generations = txn.open_table(GENERATIONS)?;
            let key = self.write_key(&networks, name)?;
            networks.insert(key.as_str(), bytes.as_slice())?;
            self.remove_journal(&mut journal)?;
            generations.insert(journal_key.as_str(), generation)?;
            Ok(())
        })?;
        if let Err(e) = self.clear_journal_file() {
            // Spent by the generation just committed: harmless.
            tracing::warn!("{e}");
        }
        Ok(())
    }
}

impl Drop for Store {
    /// Says what the command cost in fsynced commits and decoded records
    /// (`RUST_LOG=netvlan::store=debug`).
    fn drop(&mut self) {
        if let Db::Write(_) = self.db {
            tracing::debug!("durable commits: {}", self.durable_commits());
        }
        tracing::debug!(
            "records decoded: {}",
            self.records_decoded
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "netvlan-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_survive_reopening_the_database() {
        let dir = temp_dir();
        {
            let store = Store::open(&dir).expect("open");
            assert!(store.networks::<serde_json::Value>().unwrap().is_empty());
            store
                .put_network("lan", &serde_json::json!({"name": "lan", "n": 1}))
                .unwrap();
            store
                .put_network("lan", &serde_json::json!({"name": "lan", "n": 2}))
                .unwrap();
        }
        let store = Store::open(&dir).expect("reopen");
        let lan: serde_json::Value = store.network("lan").unwrap().expect("lan is stored");
        assert_eq!(lan["n"], 2, "the second write replaced the first");
        store.delete_network("lan").unwrap();
        assert!(store.network::<serde_json::Value>("lan").unwrap().is_none());
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_opener_waits_for_the_first() {
        let dir = temp_dir();
        let first = Store::open(&dir).expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_dir = dir.clone();
        let waiter = std::thread::spawn(move || {
            let store = Store::open(&thread_dir).expect("second open");
            tx.send(()).unwrap();
            store.network::<serde_json::Value>("x").unwrap()
        });
        // While `first` holds the lock the second opener cannot get through.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "second opener did not wait"
        );
        first
            .put_network("x", &serde_json::json!({"written": "by first"}))
            .unwrap();
        drop(first);
        let seen = waiter
            .join()
            .unwrap()
            .expect("second opener sees the first's write");
        assert_eq!(seen["written"], "by first");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The database file's bytes and modification time.
    fn file_state(dir: &Path) -> (Vec<u8>, std::time::SystemTime) {
        let path = dir.join(DB_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        (bytes, mtime)
    }

    #[test]
    fn a_reader_leaves_the_database_file_untouched() {
        let dir = temp_dir();
        Store::open(&dir)
            .unwrap()
            .put_network("lan", &serde_json::json!({"name": "lan"}))
            .unwrap();
        let before = file_state(&dir);
        // Past the file system's timestamp granularity.
        std::thread::sleep(std::time::Duration::from_millis(50));
        for _ in 0..3 {
            let reader = Store::open_within(&dir, std::time::Duration::from_secs(1))
                .unwrap()
                .expect("nobody holds the lock");
            let lan: serde_json::Value = reader.network("lan").unwrap().expect("lan is stored");
            assert_eq!(lan["name"], "lan");
            assert_eq!(reader.networks::<serde_json::Value>().unwrap().len(), 1);
        }
        let after = file_state(&dir);
        assert!(before.0 == after.0, "a read changed the database's bytes");
        assert_eq!(before.1, after.1, "a read changed the database's mtime");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn readers_share_the_lock_and_a_writer_waits_for_them() {
        let dir = temp_dir();
        Store::open(&dir)
            .unwrap()
            .put_network("lan", &serde_json::json!({"n": 1}))
            .unwrap();
        let patience = std::time::Duration::from_millis(200);
        let first = Store::open_within(&dir, patience)
            .unwrap()
            .expect("first reader");
        let second = Store::open_within(&dir, patience)
            .unwrap()
            .expect("a second reader gets in beside the first");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_dir = dir.clone();
        let writer = std::thread::spawn(move || {
            let store = Store::open(&thread_dir).expect("writer opens");
            tx.send(()).unwrap();
            store
                .put_network("lan", &serde_json::json!({"n": 2}))
                .unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the writer did not wait for the readers"
        );
        let seen: serde_json::Value = second.network("lan").unwrap().unwrap();
        assert_eq!(seen["n"], 1);
        drop(first);
        drop(second);
        writer.join().unwrap();
        // A writer holds the lock: a reader gives up after its patience.
        let held = Store::open(&dir).unwrap();
        assert!(Store::open_within(&dir, patience).unwrap().is_none());
        drop(held);
        let seen: serde_json::Value = Store::open_within(&dir, patience)
            .unwrap()
            .expect("lock free again")
            .network("lan")
            .unwrap()
            .unwrap();
        assert_eq!(seen["n"], 2, "a reader sees the writer's commit");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_repairs_a_database_its_writer_left_unclosed() {
        let dir = temp_dir();
        let crashed = temp_dir();
        let writer = Store::open(&dir).unwrap();
        writer
            .put_network("lan", &serde_json::json!({"n": 1}))
            .unwrap();
        // The file as a SIGKILLed writer leaves it: committed, not closed.
        std::fs::copy(dir.join(DB_FILE), crashed.join(DB_FILE)).unwrap();
        drop(writer);
        let reader = Store::open_within(&crashed, std::time::Duration::from_secs(1))
            .expect("a reader opens a database that needs a repair")
            .expect("nobody holds the lock");
        assert!(
            matches!(reader.db, Db::Write(_)),
            "the repair needs a writer"
        );
        let lan: serde_json::Value = reader.network("lan").unwrap().unwrap();
        assert_eq!(lan["n"], 1);
        drop(reader);
        let reader = Store::open_within(&crashed, std::time::Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert!(
            matches!(reader.db, Db::Read(_)),
            "once repaired, readers are read-only again"
        );
        assert!(matches!(
            reader.put_network("lan", &serde_json::json!({})),
            Err(StoreError::ReadOnly { .. })
        ));
        drop(reader);
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(crashed).unwrap();
    }

    fn named(name: &str) -> Vec<NetnsScope> {
        vec![NetnsScope::Named(name.into())]
    }

    #[test]
    fn each_namespace_sees_only_its_own_networks_and_journal() {
        let dir = temp_dir();
        {
            // A record written before namespaces were recorded: a plain key.
            let old = Store::open_scoped(&dir, vec![NetnsScope::Initial]).unwrap();
            old.put_network("lan", &serde_json::json!({"in": "initial"}))
                .unwrap();
            old.set_journal(&["initial's intent"]).unwrap();
        }
        let a = Store::open_scoped(&dir, named("a")).unwrap();
        assert!(a.network::<serde_json::Value>("lan").unwrap().is_none());
        assert!(a.networks::<serde_json::Value>().unwrap().is_empty());
        assert!(a.journal::<String>().unwrap().is_empty());
        a.put_network("lan", &serde_json::json!({"in": "a"}))
            .unwrap();
        a.set_journal(&["a's intent"]).unwrap();
        drop(a);

        let b = Store::open_scoped(&dir, named("b")).unwrap();
        assert!(b.networks::<serde_json::Value>().unwrap().is_empty());
        assert!(b.journal::<String>().unwrap().is_empty());
        b.commit_network("lan", &serde_json::json!({"in": "b"}))
            .unwrap();
        b.delete_network("lan").unwrap();
        drop(b);

        let init = Store::open_scoped(&dir, vec![NetnsScope::Initial]).unwrap();
        let lan: serde_json::Value = init.network("lan").unwrap().unwrap();
        assert_eq!(
            lan["in"], "initial",
            "the old record is the initial namespace's"
        );
        assert_eq!(init.journal::<String>().unwrap(), ["initial's intent"]);
        init.clear_journal().unwrap();
        drop(init);

        // After a "reboot" the namespace named a has a new identity but
        // the same name: it finds its records and its journal.
        let id = crate::sys::netns::NetnsId { dev: 4, ino: 99 };
        let a = Store::open_scoped(
            &dir,
            vec![
                NetnsScope::Named("a".into()),
                NetnsScope::Anonymous {
                    id,
                    boot: "new-boot".into(),
                },
            ],
        )
        .unwrap();
        let lan: Vec<serde_json::Value> = a.networks().unwrap();
        assert_eq!(lan, [serde_json::json!({"in": "a"})]);
        assert_eq!(a.journal::<String>().unwrap(), ["a's intent"]);
        drop(a);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The state directory's files as a process killed now leaves them on
    /// disk (what the kernel holds; nothing of the process's memory).
    fn killed_copy(dir: &Path) -> PathBuf {
        let copy = temp_dir();
        for file in [DB_FILE, JOURNAL_FILE] {
            if dir.join(file).exists() {
                std::fs::copy(dir.join(file), copy.join(file)).unwrap();
            }
        }
        copy
    }

    #[test]
    fn a_commit_without_durability_is_lost_when_the_process_dies() {
        // Why the journal is not a `Durability::None` redb commit: redb
        // keeps such a commit in its own memory until a durable one.
        let dir = temp_dir();
        let db = redb::Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(NETWORKS)
            .unwrap()
            .insert("durable", b"1".as_slice())
            .unwrap();
        txn.commit().unwrap();
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        txn.open_table(NETWORKS)
            .unwrap()
            .insert("not durable", b"2".as_slice())
            .unwrap();
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(NETWORKS).unwrap();
        assert!(
            table.get("not durable").unwrap().is_some(),
            "visible in the process"
        );
        let killed = killed_copy(&dir);
        let reopened = redb::Database::create(killed.join(DB_FILE)).unwrap();
        let read = reopened.begin_read().unwrap();
        let table = read.open_table(NETWORKS).unwrap();
        assert!(table.get("durable").unwrap().is_some());
        assert!(
            table.get("not durable").unwrap().is_none(),
            "a Durability::None commit outlived its process"
        );
        drop((table, read, reopened, db));
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(killed).unwrap();
    }

    #[test]
    fn the_journal_survives_a_killed_process_without_a_durable_commit() {
        let dir = temp_dir();
        let store = Store::open(&dir).unwrap();
        store
            .put_network("lan", &serde_json::json!({"n": 1}))
            .unwrap();
        let before = store.durable_commits();
        store.set_journal(&["link"]).unwrap();
        store.set_journal(&["link", "route"]).unwrap();
        assert_eq!(
            store.durable_commits(),
            before,
            "writing the journal made a durable commit"
        );
        let killed = killed_copy(&dir);
        drop(store);
        let recovered = Store::open(&killed).unwrap();
        assert_eq!(recovered.journal::<String>().unwrap(), ["link", "route"]);
        recovered.clear_journal().unwrap();
        assert!(recovered.journal::<String>().unwrap().is_empty());
        assert!(!killed.join(JOURNAL_FILE).exists());
        drop(recovered);
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(killed).unwrap();
    }

    #[test]
    fn a_command_makes_one_durable_commit_and_spends_its_journal() {
        let dir = temp_dir();
        let store = Store::open(&dir).unwrap();
        let before = store.durable_commits();
        store.set_journal(&["link"]).unwrap();
        store.set_journal(&["link", "route"]).unwrap();
        // The journal file as a power cut may leave it: written back
        // before the commit, its removal after the commit not.
        let journal = std::fs::read(dir.join(JOURNAL_FILE)).unwrap();
        store
            .commit_network("lan", &serde_json::json!({"n": 1}))
            .unwrap();
        assert_eq!(store.durable_commits() - before, 1, "one durable commit");
        assert!(store.journal::<String>().unwrap().is_empty());
        drop(store);
        std::fs::write(dir.join(JOURNAL_FILE), journal).unwrap();
        let rebooted = Store::open(&dir).unwrap();
        assert!(
            rebooted.journal::<String>().unwrap().is_empty(),
            "a journal its commit outlived would undo what the record owns"
        );
        // The next command's journal is live again.
        rebooted.set_journal(&["next"]).unwrap();
        assert_eq!(rebooted.journal::<String>().unwrap(), ["next"]);
        drop(rebooted);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_journal_torn_by_a_power_cut_is_dropped_and_commands_go_on() {
        let dir = temp_dir();
        let store = Store::open(&dir).unwrap();
        store.set_journal(&["link"]).unwrap();
        drop(store);
        for torn in [&b""[..], &b"{\"pending\":{\"x"[..]] {
            std::fs::write(dir.join(JOURNAL_FILE), torn).unwrap();
            let store = Store::open(&dir).unwrap();
            assert!(store.journal::<String>().unwrap().is_empty());
            store.set_journal(&["route"]).unwrap();
            assert_eq!(store.journal::<String>().unwrap(), ["route"]);
            store.clear_journal().unwrap();
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_journal_left_in_the_database_by_an_older_version_is_recovered() {
        let dir = temp_dir();
        let store = Store::open(&dir).unwrap();
        let bytes = serde_json::to_vec(&["old"]).unwrap();
        store
            .write_tables(|_, journal| {
                journal.insert(PENDING, bytes.as_slice())?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.journal::<String>().unwrap(), ["old"]);
        store.clear_journal().unwrap();
        assert!(store.journal::<String>().unwrap().is_empty());
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

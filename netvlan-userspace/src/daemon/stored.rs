//! The stored networks as the daemon's readers (scrapes, the live page,
//! `stats` through the API) see them, decoded again only when the store
//! changed since the last read.
//!
//! A network of 10,000 endpoints is one record of a few megabytes, and
//! finding the daemon's own namespace names looks at every named
//! namespace of the host: both cost more than reading the counters, on
//! every scrape, for records that change only when a command runs. So a
//! read opens the store under the namespace's names found last time and
//! compares its commit count ([`Store::changes`]) and the database file's
//! size and modification time with what it kept; only when one moved does
//! it look the names up again and decode the records.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use crate::{
    control::NetworkRecord,
    store::{Store, StoreError},
    sys::netns::NetnsScope,
};

/// What one read found.
pub enum Stored {
    /// No state directory database yet: no networks.
    Absent,
    /// A command held the state for longer than the reader's patience.
    Busy,
    Networks {
        networks: Arc<Vec<NetworkRecord>>,
        /// Moves each time the records are decoded again (the store
        /// committed something): equal generations, the same records.
        generation: u64,
    },
}

/// The records of the last read, and what says they are still current.
#[derive(Default)]
pub struct StoredNetworks {
    kept: Mutex<Option<Kept>>,
}

struct Kept {
    scopes: Vec<NetnsScope>,
    stamp: Stamp,
    networks: Arc<Vec<NetworkRecord>>,
    generation: u64,
}

/// The store's commit count and its file's size and modification time:
/// the count moves with every commit this build makes, the file's stamp
/// also with one an older build made (it kept no count).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    changes: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// Read under the store's lock (no writer can move it meanwhile).
    fn of(store: &Store) -> Result<Stamp, StoreError> {
        let changes = store.changes()?;
        let meta = std::fs::metadata(store.path()).ok();
        Ok(Stamp {
            changes,
            len: meta.as_ref().map_or(0, |m| m.len()),
            modified: meta.and_then(|m| m.modified().ok()),
        })
    }
}

impl StoredNetworks {
    /// The networks stored in `state_dir` for the calling thread's
    /// namespace, waiting at most `patience` for a command holding it.
    pub fn read(&self, state_dir: &Path, patience: Duration) -> Result<Stored, StoreError> {
        if !Store::exists(state_dir) {
            return Ok(Stored::Absent);
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = kept.as_ref() {
            let Some(store) =
                Store::open_within_scoped(state_dir, patience, Some(last.scopes.clone()))?
            else {
                return Ok(Stored::Busy);
            };
            if Stamp::of(&store)? == last.stamp {
                return Ok(Stored::Networks {
                    networks: last.networks.clone(),
                    generation: last.generation,
                });
            }
        }
        let generation = kept.as_ref().map_or(0, |last| last.generation + 1);
        // First read, or the store changed: the names too may have.
        let Some(store) = Store::open_within(state_dir, patience)? else {
            return Ok(Stored::Busy);
        };
        let networks = Arc::new(store.networks::<NetworkRecord>()?);
        tracing::debug!(generation, "stored networks decoded");
        *kept = Some(Kept {
            scopes: store.scopes().to_vec(),
            stamp: Stamp::of(&store)?,
            networks: networks.clone(),
            generation,
        });
        Ok(Stored::Networks {
            networks,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{fixture, Driver};

    fn networks(stored: &StoredNetworks, dir: &Path) -> Arc<Vec<NetworkRecord>> {
        match stored.read(dir, Duration::from_secs(5)).unwrap() {
            Stored::Networks { networks, .. } => networks,
            Stored::Absent => panic!("no database in {}", dir.display()),
            Stored::Busy => panic!("the store stayed locked"),
        }
    }

    #[test]
    fn records_are_decoded_again_only_after_a_commit() {
        let dir = std::env::temp_dir().join(format!(
            "netvlan-stored-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let stored = StoredNetworks::default();
        assert!(matches!(
            stored.read(&dir, Duration::ZERO),
            Ok(Stored::Absent)
        ));

        let mut lan = fixture::network("lan", Driver::Macvlan, "10.9.0.0/24", &[]);
        Store::open(&dir).unwrap().put_network("lan", &lan).unwrap();
        let first = networks(&stored, &dir);
        assert_eq!(first.len(), 1);
        assert!(first[0].endpoints.is_empty());
        // Nothing committed since: the same records, not decoded again.
        assert!(Arc::ptr_eq(&first, &networks(&stored, &dir)));

        lan.endpoints.insert(
            "sb1".into(),
            fixture::endpoint("sb1", "02:42:0a:09:00:02", "10.9.0.2/24"),
        );
        Store::open(&dir).unwrap().put_network("lan", &lan).unwrap();
        let after = networks(&stored, &dir);
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after[0].endpoints.len(), 1, "the commit is seen");

        // A command that only reads commits nothing: still current.
        drop(Store::open_within(&dir, Duration::from_secs(5)).unwrap());
        assert!(Arc::ptr_eq(&after, &networks(&stored, &dir)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

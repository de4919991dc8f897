//! Batch map operations over the bpf(2) syscall (aya 0.14 has none).
//!
//! One `BPF_MAP_LOOKUP_BATCH` reads a whole array or hash map, one
//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` writes or removes any
//! number of entries: what makes reading 4,096 VLAN flags or 65,536 slots
//! one syscall instead of one per entry. Keys and values are [`aya::Pod`];
//! per-CPU maps carry one value per possible CPU, each rounded up to
//! 8 bytes, as the kernel copies them.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    maps::{MapData, MapType},
    Pod,
};

/// `enum bpf_cmd` (linux/bpf.h), since 5.6.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// `map_flags` bit of an array userspace can map.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Errors of a batch operation, naming the map and the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{op} on map {map} failed after {done} entries")]
    Syscall {
        op: &'static str,
        map: String,
        /// Entries the kernel processed before it failed.
        done: u32,
        #[source]
        source: io::Error,
    },
    #[error("map {map}: {what} is {size} B, the map's is {expected} B")]
    Size {
        map: String,
        what: &'static str,
        size: usize,
        expected: usize,
    },
    #[error("cannot describe map {map}")]
    Info {
        map: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot count this machine's possible CPUs (for per-CPU map {map})")]
    PossibleCpus {
        map: String,
        #[source]
        source: io::Error,
    },
}

impl BatchError {
    /// The kernel's errno, when the syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BatchError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A map as batch operations see it: its fd and the sizes the kernel copies.
pub struct BatchMap<'a> {
    fd: BorrowedFd<'a>,
    name: String,
    shape: Shape,
}

/// The sizes of a map the kernel copies: learnt with a syscall, so kept
/// by readers that hold a map open across reads ([`BatchMap::with_shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    key_size: usize,
    value_size: usize,
    max_entries: u32,
    /// Possible CPUs for a per-CPU map, 1 otherwise.
    copies: usize,
    /// An array made with `BPF_F_MMAPABLE`.
    mmapable: bool,
}

impl<'a> BatchMap<'a> {
    /// Describes `map` (its name is for errors).
    pub fn new(map: &'a MapData, name: &str) -> Result<Self, BatchError> {
        let info = map.info().map_err(|source| BatchError::Info {
            map: name.into(),
            source,
        })?;
        let per_cpu = matches!(
            info.map_type(),
            Ok(MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash)
        );
        let copies = if per_cpu {
            aya::util::nr_cpus().map_err(|(_, source)| BatchError::PossibleCpus {
                map: name.into(),
                source,
            })?
        } else {
            1
        };
        let shape = Shape {
            key_size: info.key_size() as usize,
            value_size: info.value_size() as usize,
            max_entries: info.max_entries(),
            copies,
            mmapable: info.map_flags() & BPF_F_MMAPABLE != 0,
        };
        Ok(Self::with_shape(map, name, shape))
    }

    /// `map`, known to have `shape` (it was described before).
    pub fn with_shape(map: &'a MapData, name: &str, shape: Shape) -> Self {
        BatchMap {
            fd: map.fd().as_fd(),
            name: name.into(),
            shape,
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Values per key: the possible CPUs of a per-CPU map, else 1.
    pub fn copies(&self) -> usize {
        self.shape.copies
    }

    pub fn max_entries(&self) -> u32 {
        self.shape.max_entries
    }

    /// Bytes of one key's value(s) as the kernel copies them.
    fn stride(&self) -> usize {
        if self.shape.copies > 1 {
            self.shape.value_size.next_multiple_of(8) * self.shape.copies
        } else {
            self.shape.value_size
        }
    }

    fn check<K, V>(&self) -> Result<(), BatchError> {
        let size = |what, size: usize, expected: usize| {
            if size == expected {
                Ok(())
            } else {
                Err(BatchError::Size {
                    map: self.name.clone(),
                    what,
                    size,
                    expected,
                })
            }
        };
        size("the key", size_of::<K>(), self.shape.key_size)?;
        size("the value", size_of::<V>(), self.shape.value_size)
    }

    fn call(
        &self,
        cmd: libc::c_long,
        op: &'static str,
        attr: &mut BatchAttr,
    ) -> Result<(), BatchError> {
        attr.map_fd = self.fd.as_raw_fd() as u32;
        // SAFETY: attr is a valid `bpf_attr` prefix for the batch commands;
        // the pointers in it address buffers that outlive the call and are
        // sized for `count` entries (keys, values, the batch token).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        if rc < 0 {
            return Err(BatchError::Syscall {
                op,
                map: self.name.clone(),
                done: attr.count,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Every entry, in the kernel's order, each key with its values (one
    /// per possible CPU for a per-CPU map). Arrays list every index.
    pub fn lookup_all<K: Pod, V: Pod>(&self) -> Result<Vec<(K, Vec<V>)>, BatchError> {
        self.lookup(None, self.shape.max_entries)
    }

    /// Every value of an array, by index: through a read-only mapping of
    /// the array when it was made `BPF_F_MMAPABLE` (a memory copy; the
    /// batch syscall walks the entries one by one, about 17 ms for 65,536
    /// on this machine), else with [`Self::lookup_all`].
    pub fn read_array<V: Pod>(&self) -> Result<Vec<V>, BatchError> {
        if !self.shape.mmapable || self.shape.copies != 1 {
            let all = self.lookup_all::<u32, V>()?;
            return Ok(all.into_iter().map(|(_, v)| v[0]).collect());
        }
        self.check::<u32, V>()?;
        // Mmapable arrays lay their values out every round_up(size, 8) bytes.
        let stride = self.shape.value_size.next_multiple_of(8);
        let len = stride * self.shape.max_entries as usize;
        // SAFETY: a fresh shared read-only mapping of the map's fd, of the
        // array's size; unmapped below before anything else can use it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(BatchError::Syscall {
                op: "mmap",
                map: self.name.clone(),
                done: 0,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: base..base+len is mapped readable for the whole copy.
        let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
        let out = (0..self.shape.max_entries as usize)
            .map(|i| read::<V>(&bytes[i * stride..]))
            .collect();
        // SAFETY: the mapping made above, no longer borrowed.
        unsafe { libc::munmap(base, len) };
        Ok(out)
    }

    /// Up to `count` entries of an array from index `start` on.
    pub fn lookup_range<V: Pod>(
        &self,
        start: u32,
        count: u32,
    ) -> Result<Vec<(u32, Vec<V>)>, BatchError> {
        // The batch token of an array is the previous key.
        let after = start.checked_sub(1);
        self.lookup(after, count)
    }

    /// Reads up to `limit` entries after the key `after` (from the start
    /// when `None`), one syscall per `limit` entries; a hash ends with
    /// ENOENT, which is the end, not an error.
    fn lookup<K: Pod, V: Pod>(
        &self,
        after: Option<K>,
        limit: u32,
    ) -> Result<Vec<(K, Vec<V>)>, BatchError> {
        self.check::<K, V>()?;
        let limit = limit.min(self.shape.max_entries) as usize;
        let stride = self.stride();
        let mut keys = vec![0u8; limit.max(1) * self.shape.key_size];
        let mut values = vec![0u8; limit.max(1) * stride];
        // Tokens: an array's is its key, a hash's a u32 bucket; 8 bytes
        // hold either.
        let (mut token_in, mut token_out) = ([0u8; 16], [0u8; 16]);
        let mut started = false;
        if let Some(key) = after {
            // SAFETY: K is Pod and at most the key size checked above.
            let bytes = unsafe {
                std::slice::from_raw_parts(&key as *const K as *const u8, size_of::<K>())
            };
            token_in[..bytes.len()].copy_from_slice(bytes);
            started = true;
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let want = limit - out.len();
            let mut attr = BatchAttr {
                in_batch: if started { token_in.as_ptr() as u64 } else { 0 },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: want as u32,
                ..Default::default()
            };
            let result = self.call(BPF_MAP_LOOKUP_BATCH, "BPF_MAP_LOOKUP_BATCH", &mut attr);
            let end = match result {
                Ok(()) => false,
                Err(e) if e.errno() == Some(libc::ENOENT) => true,
                Err(e) => return Err(e),
            };
            let got = (attr.count as usize).min(want);
            for i in 0..got {
                let key = read::<K>(&keys[i * self.shape.key_size..]);
                let base = i * stride;
                let per = if self.shape.copies > 1 {
                    self.shape.value_size.next_multiple_of(8)
                } else {
                    self.shape.value_size
                };
                let vals = (0..self.shape.copies)
                    .map(|cpu| read::<V>(&values[base + cpu * per..]))
                    .collect();
                out.push((key, vals));
            }
            if end || got == 0 {
                break;
            }
            token_in = token_out;
            started = true;
        }
        Ok(out)
    }

    /// How many entries a hash holds, read with batch lookups of `chunk`
    /// entries each (keys and values are copied and dropped: the kernel
    /// keeps no count userspace can read on older kernels).
    pub fn count(&self, chunk: u32) -> Result<u32, BatchError> {
        let chunk = chunk.clamp(1, self.shape.max_entries.max(1)) as usize;
        let mut keys = vec![0u8; chunk * self.shape.key_size];
        let mut values = vec![0u8; chunk * self.stride()];
        let (mut token_in, mut token_out) = ([0u8; 16], [0u8; 16]);
        let (mut started, mut total) = (false, 0u32);
        loop {
            let mut attr = BatchAttr {
                in_batch: if started { token_in.as_ptr() as u64 } else { 0 },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                ..Default::default()
            };
            let end = match self.call(BPF_MAP_LOOKUP_BATCH, "BPF_MAP_LOOKUP_BATCH", &mut attr) {
                Ok(()) => false,
                Err(e) if e.errno() == Some(libc::ENOENT) => true,
                Err(e) => return Err(e),
            };
            let got = attr.count.min(chunk as u32);
            total += got;
            if end || got == 0 {
                return Ok(total);
            }
            token_in = token_out;
            started = true;
        }
    }

    /// Writes `entries` (one value per key; the same value on every CPU
    /// of a per-CPU map) in one syscall; `flags` as for an update
    /// (`BPF_ANY` = 0). A full hash fails with E2BIG.
    pub fn update<K: Pod, V: Pod>(&self, entries: &[(K, V)], flags: u64) -> Result<(), BatchError> {
        self.check::<K, V>()?;
        if entries.is_empty() {
            return Ok(());
        }
        let stride = self.stride();
        let per = stride / self.shape.copies;
        let mut keys = Vec::with_capacity(entries.len() * self.shape.key_size);
        let mut values = vec![0u8; entries.len() * stride];
        for (i, (key, value)) in entries.iter().enumerate() {
            keys.extend_from_slice(bytes_of(key));
            for cpu in 0..self.shape.copies {
                let at = i * stride + cpu * per;
                values[at..at + self.shape.value_size].copy_from_slice(bytes_of(value));
            }
        }
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: entries.len() as u32,
            elem_flags: flags,
            ..Default::default()
        };
        self.call(BPF_MAP_UPDATE_BATCH, "BPF_MAP_UPDATE_BATCH", &mut attr)
    }

    /// Removes `keys` from a hash in one syscall (a missing key fails
    /// with ENOENT).
    pub fn delete<K: Pod>(&self, keys: &[K]) -> Result<(), BatchError> {
        if size_of::<K>() != self.shape.key_size {
            return Err(BatchError::Size {
                map: self.name.clone(),
                what: "the key",
                size: size_of::<K>(),
                expected: self.shape.key_size,
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = keys.iter().flat_map(|k| bytes_of(k).to_vec()).collect();
        let mut attr = BatchAttr {
            keys: bytes.as_ptr() as u64,
            count: keys.len() as u32,
            ..Default::default()
        };
        self.call(BPF_MAP_DELETE_BATCH, "BPF_MAP_DELETE_BATCH", &mut attr)
    }
}

fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: Pod types are plain bytes without padding.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()) }
}

fn read<T: Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: the slice holds at least size_of::<T>() bytes and any bit
    // pattern is a valid Pod.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) }
}

#[cfg(test)]
mod tests {
    //! Against real maps the kernel makes (needs root, like every
    //! datapath test).
    use super::*;
    use aya::maps::{Array, HashMap, IterableMap, PerCpuArray, PerCpuHashMap};

    fn root() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "batch map tests create BPF maps: run them as root"
        );
    }

    #[test]
    fn an_array_is_read_whole_and_by_range_and_written_in_one_batch() {
        root();
        let mut map = Array::<MapData, u32>::create(4096, 0).unwrap();
        map.set(7, 70, 0).unwrap();
        let data = IterableMap::map(&map);
        let batch = BatchMap::new(data, "test_array").unwrap();
        let all: Vec<(u32, Vec<u32>)> = batch.lookup_all().unwrap();
        assert_eq!(all.len(), 4096);
        assert_eq!(all[7], (7, vec![70]));
        assert!(all.iter().filter(|(k, _)| *k != 7).all(|(_, v)| v == &[0]));
        batch.update(&[(1u32, 10u32), (4095, 40950)], 0).unwrap();
        let range: Vec<(u32, Vec<u32>)> = batch.lookup_range(4094, 10).unwrap();
        assert_eq!(range, vec![(4094, vec![0]), (4095, vec![40950])]);
        let first: Vec<(u32, Vec<u32>)> = batch.lookup_range(0, 2).unwrap();
        assert_eq!(first, vec![(0, vec![0]), (1, vec![10])]);
    }

    #[test]
    fn a_hash_is_read_to_its_end_updated_and_deleted_in_batches() {
        root();
        let map = HashMap::<MapData, u64, u32>::create(1000, 1).unwrap();
        let data = IterableMap::map(&map);
        let batch = BatchMap::new(data, "test_hash").unwrap();
        let empty: Vec<(u64, Vec<u32>)> = batch.lookup_all().unwrap();
        assert!(empty.is_empty());
        let entries: Vec<(u64, u32)> = (0..700u64).map(|k| (k * 3, k as u32)).collect();
        batch.update(&entries, 0).unwrap();
        let mut all: Vec<(u64, Vec<u32>)> = batch.lookup_all().unwrap();
        all.sort();
        assert_eq!(all.len(), 700);
        assert!(all.iter().all(|(k, v)| v == &[(*k / 3) as u32]));
        let gone: Vec<u64> = (0..350u64).map(|k| k * 3).collect();
        batch.delete(&gone).unwrap();
        let left: Vec<(u64, Vec<u32>)> = batch.lookup_all().unwrap();
        assert_eq!(left.len(), 350);
        assert!(left.iter().all(|(k, _)| *k >= 350 * 3));
        let err = batch.delete(&[1u64]).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        assert!(err.to_string().contains("test_hash"), "{err}");
    }

    #[test]
    fn a_hash_is_counted_across_chunks() {
        root();
        let map = HashMap::<MapData, u32, u64>::create(4096, 1).unwrap();
        let batch = BatchMap::new(IterableMap::map(&map), "test_count").unwrap();
        assert_eq!(batch.count(64).unwrap(), 0);
        let entries: Vec<(u32, u64)> = (0..1000u32).map(|k| (k * 7, k as u64)).collect();
        batch.update(&entries, 0).unwrap();
        assert_eq!(batch.count(64).unwrap(), 1000);
        assert_eq!(batch.count(4096).unwrap(), 1000);
    }

    #[test]
    fn a_full_hash_refuses_the_batch_with_e2big() {
        root();
        let map = HashMap::<MapData, u32, u32>::create(4, 1).unwrap();
        let data = IterableMap::map(&map);
        let batch = BatchMap::new(data, "test_small").unwrap();
        let entries: Vec<(u32, u32)> = (0..5).map(|k| (k, k)).collect();
        let err = batch.update(&entries, 0).unwrap_err();
        assert_eq!(err.errno(), Some(libc::E2BIG), "{err}");
    }

    #[test]
    fn per_cpu_values_come_one_per_possible_cpu() {
        root();
        let cpus = aya::util::nr_cpus().unwrap();
        let map = PerCpuArray::<MapData, [u8; 12]>::create(16, 0).unwrap();
        let data = IterableMap::map(&map);
        let batch = BatchMap::new(data, "test_percpu").unwrap();
        assert_eq!(batch.copies(), cpus);
        batch.update(&[(3u32, [7u8; 12])], 0).unwrap();
        let all: Vec<(u32, Vec<[u8; 12]>)> = batch.lookup_all().unwrap();
        assert_eq!(all.len(), 16);
        assert_eq!(all[3].1, vec![[7u8; 12]; cpus]);
        assert_eq!(all[2].1, vec![[0u8; 12]; cpus]);

        let hash = PerCpuHashMap::<MapData, u32, u64>::create(64, 1).unwrap();
        let data = IterableMap::map(&hash);
        let batch = BatchMap::new(data, "test_percpu_hash").unwrap();
        batch.update(&[(9u32, 99u64), (8, 88)], 0).unwrap();
        let mut all: Vec<(u32, Vec<u64>)> = batch.lookup_all().unwrap();
        all.sort();
        assert_eq!(all, vec![(8, vec![88; cpus]), (9, vec![99; cpus])]);
    }

    #[test]
    fn an_mmapable_array_is_read_through_its_mapping_like_by_batch() {
        root();
        let mut mapped = Array::<MapData, [u8; 8]>::create(65_536, BPF_F_MMAPABLE).unwrap();
        let mut plain = Array::<MapData, [u8; 8]>::create(65_536, 0).unwrap();
        for (i, v) in [(0u32, [1u8; 8]), (258, [2; 8]), (65_535, [3; 8])] {
            mapped.set(i, v, 0).unwrap();
            plain.set(i, v, 0).unwrap();
        }
        let m = BatchMap::new(IterableMap::map(&mapped), "test_mmap").unwrap();
        let p = BatchMap::new(IterableMap::map(&plain), "test_plain").unwrap();
        assert!(m.shape.mmapable && !p.shape.mmapable);
        let (via_map, via_batch) = (
            m.read_array::<[u8; 8]>().unwrap(),
            p.read_array::<[u8; 8]>().unwrap(),
        );
        assert_eq!(via_map.len(), 65_536);
        assert_eq!(via_map, via_batch);
        assert_eq!(
            (via_map[258], via_map[65_535], via_map[7]),
            ([2; 8], [3; 8], [0; 8])
        );
        // The mapping shows what the kernel holds now.
        m.update(&[(7u32, [9u8; 8])], 0).unwrap();
        assert_eq!(m.read_array::<[u8; 8]>().unwrap()[7], [9; 8]);
    }

    #[test]
    fn a_key_of_the_wrong_size_is_refused_naming_the_map() {
        root();
        let map = Array::<MapData, u32>::create(4, 0).unwrap();
        let data = IterableMap::map(&map);
        let batch = BatchMap::new(data, "test_sizes").unwrap();
        let err = batch.lookup_all::<u64, u32>().unwrap_err();
        assert!(err.to_string().contains("test_sizes"), "{err}");
    }
}

//! The embedded eBPF objects and their pins, written once for the wire
//! (XDP) and the endpoint (TC) programs: loading an object with its maps
//! reused from pins, pinning a new attachment through a staging directory,
//! re-pointing a program pin after an upgrade, and opening a pinned map or
//! link (with errors that name the map, the pin and the errno).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, MapError, MapInfo},
    pin::PinError,
    programs::links::{FdLink, PinnedLink},
    Ebpf, EbpfLoader,
};

use super::{DatapathError, InterfacePins};
use crate::sys::{bpf_batch::BatchError, unrooted};

/// An eBPF object built from `netvlan-ebpf`, embedded so the binary alone
/// is enough on a target host, with the one list of the maps it declares
/// (checked against the object by a unit test) and pins.
pub struct Embedded {
    pub bytes: &'static [u8],
    pub maps: &'static [&'static str],
}

/// A loader that has not read the kernel's BTF. aya 0.14's
/// `EbpfLoader::new` parses /sys/kernel/btf/vmlinux whatever the object
/// needs (5.5 MB: about 36 ms of every command that loads a program, in a
/// release build here; aya-rs/aya#1172), and `btf(None)` only drops it
/// afterwards. The kernel's BTF is the target of CO-RE relocations, which
/// netvlan's objects have none of (`no_object_needs_the_kernel_btf`), so
/// the loader is made on a thread that cannot find the file
/// ([`unrooted::run`]): it then has no target BTF, as `btf(None)` leaves
/// it. Where no such thread can be had, the plain loader.
pub fn loader() -> EbpfLoader<'static> {
    let mut loader = unrooted::run(EbpfLoader::new).unwrap_or_else(|e| {
        tracing::debug!("the loader parses the kernel's BTF: no unrooted thread ({e})");
        EbpfLoader::new()
    });
    loader.btf(None);
    loader
}

/// The wire program (XDP on a parent link), its maps and the benchmarks'
/// pass-only floor program.
pub static WIRE: Embedded = Embedded {
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netvlan.bpf.o")),
    maps: netvlan_common::maps::WIRE_MAPS,
};

/// The endpoint programs (TC egress and ingress on an endpoint link).
pub static ENDPOINT: Embedded = Embedded {
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netvlan-egress.bpf.o")),
    maps: netvlan_common::antispoof::ENDPOINT_MAPS,
};

/// One map's shape, as the kernel reports it and as the object declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

impl Embedded {
    /// Loads the object with fresh maps (a new attachment).
    pub fn load(&self) -> Result<Ebpf, DatapathError> {
        loader().load(self.bytes).map_err(DatapathError::Load)
    }

    /// Loads the object against the maps pinned in `pins`, so what they
    /// hold carries over; maps not pinned yet (added by this build) are
    /// created and pinned there, and returned by name. Refuses, before
    /// loading anything, a pinned map whose shape this build changed.
    pub fn load_reusing(&self, pins: &InterfacePins) -> Result<(Ebpf, Vec<String>), DatapathError> {
        let shapes = self.shapes()?;
        let mut new_maps = Vec::new();
        for &name in self.maps {
            let want = shapes
                .get(name)
                .ok_or(DatapathError::MissingObject { what: "map", name })?;
            let path = pins.map(name);
            if !path.exists() {
                new_maps.push(name.to_string());
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| DatapathError::OpenMap {
                name,
                path: path.clone(),
                source: Box::new(source),
            })?;
            let have = Shape {
                map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if have != *want {
                return Err(DatapathError::IncompatibleMap {
                    path,
                    pinned: have.to_string(),
                    built: want.to_string(),
                });
            }
        }
        let mut loader = loader();
        for &name in self.maps {
            loader.map_pin_path(name, pins.map(name));
        }
        let ebpf = loader.load(self.bytes).map_err(DatapathError::Load)?;
        Ok((ebpf, new_maps))
    }

    /// The shapes of the object's maps.
    fn shapes(&self) -> Result<HashMap<String, Shape>, DatapathError> {
        let object =
            aya_obj::Object::parse(self.bytes).map_err(|e| DatapathError::Load(e.into()))?;
        Ok(object
            .maps
            .iter()
            .map(|(name, m)| {
                let shape = Shape {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                };
                (name.clone(), shape)
            })
            .collect())
    }

    /// Pins a new attachment: every map of the object, then what
    /// `pin_programs` pins (programs and links), into `staging`, renamed to
    /// `target` once complete. Readers never see half an attachment, and a
    /// failure leaves nothing pinned (the caller's unpinned links detach
    /// when dropped).
    pub fn pin_new(
        &self,
        ebpf: &mut Ebpf,
        staging: &InterfacePins,
        target: &InterfacePins,
        pin_programs: impl FnOnce(&mut Ebpf, &InterfacePins) -> Result<(), DatapathError>,
    ) -> Result<(), DatapathError> {
        let pinned = (|| {
            std::fs::create_dir_all(staging.dir()).map_err(|source| DatapathError::PinDir {
                path: staging.dir().into(),
                source,
            })?;
            for &name in self.maps {
                let map = ebpf
                    .map(name)
                    .ok_or(DatapathError::MissingObject { what: "map", name })?;
                pin_at(staging.map(name), |path| map.pin(path))?;
            }
            pin_programs(ebpf, staging)?;
            std::fs::rename(staging.dir(), target.dir()).map_err(|source| DatapathError::PinDir {
                path: target.dir().into(),
                source,
            })
        })();
        if pinned.is_err() {
            if let Err(cleanup) = staging.remove() {
                tracing::error!("cannot remove {}: {cleanup}", staging.dir().display());
            }
        }
        pinned
    }
}

/// Pins one object at `path` with `pin` (a map's, program's or link's
/// `pin`), naming the path on failure.
pub fn pin_at(
    path: PathBuf,
    pin: impl FnOnce(&Path) -> Result<(), PinError>,
) -> Result<(), DatapathError> {
    pin(&path).map_err(|source| DatapathError::Pin { path, source })
}

/// Points the program pin at `path` to a new program (after an upgrade
/// swapped it in): pinned under a temporary name, renamed over the old one,
/// so the pin is never missing.
pub fn replace_pin(
    path: PathBuf,
    pin: impl FnOnce(&Path) -> Result<(), PinError>,
) -> Result<(), DatapathError> {
    let mut staged = path.clone().into_os_string();
    staged.push("_next");
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    pin_at(staged.clone(), pin)?;
    std::fs::rename(&staged, &path).map_err(|source| DatapathError::PinDir { path, source })
}

/// Opens the map `name` pinned in `pins` as the typed map `T`.
pub fn open_map<T>(pins: &InterfacePins, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let err = |source| DatapathError::OpenMap {
        name,
        path: pins.map(name),
        source: Box::new(source),
    };
    Map::from_map_data(open_data(pins, name)?)
        .map_err(err)?
        .try_into()
        .map_err(err)
}

/// A pinned map's data, for batch operations.
pub(super) fn open_data(
    pins: &InterfacePins,
    name: &'static str,
) -> Result<MapData, DatapathError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|source| DatapathError::OpenMap {
        name,
        path,
        source: Box::new(source),
    })
}

/// Names a failed batch operation on `name`; E2BIG from a map of known
/// `capacity` means it is full ([`DatapathError::MapFull`]). The path is
/// spelt only on failure: scrapes map every endpoint's read through it.
pub(super) fn batch_err<'p>(
    pins: &'p InterfacePins,
    name: &'static str,
    capacity: Option<u32>,
) -> impl Fn(BatchError) -> DatapathError + 'p {
    move |source| match (source.errno(), capacity) {
        (Some(libc::E2BIG), Some(capacity)) => DatapathError::MapFull {
            path: pins.map(name),
            capacity,
        },
        _ => DatapathError::MapBatch {
            name,
            path: pins.map(name),
            source: Box::new(source),
        },
    }
}

/// The constructor of one of the map-entry failures of [`DatapathError`].
type EntryFailure = fn(&'static str, PathBuf, Box<MapError>) -> DatapathError;

/// Names a failed operation on an entry of the map `name` pinned in `pins`.
fn entry_err(
    pins: &InterfacePins,
    name: &'static str,
    failure: EntryFailure,
) -> impl Fn(MapError) -> DatapathError {
    let path = pins.map(name);
    move |source| failure(name, path.clone(), Box::new(source))
}

/// Names a failed read of an entry of the map `name` pinned in `pins`.
pub fn read_err(pins: &InterfacePins, name: &'static str) -> impl Fn(MapError) -> DatapathError {
    entry_err(pins, name, |name, path, source| DatapathError::MapRead {
        name,
        path,
        source,
    })
}

/// Names a failed delete of an entry of the map `name` pinned in `pins`.
pub fn delete_err(pins: &InterfacePins, name: &'static str) -> impl Fn(MapError) -> DatapathError {
    entry_err(pins, name, |name, path, source| DatapathError::MapDelete {
        name,
        path,
        source,
    })
}

/// Names a failed write of an entry of the map `name` pinned in `pins`;
/// an insert into a full map (E2BIG) of known `capacity` becomes
/// [`DatapathError::MapFull`], so the command says what is wrong.
pub fn write_err(
    pins: &InterfacePins,
    name: &'static str,
    capacity: Option<u32>,
) -> impl Fn(MapError) -> DatapathError {
    let update = entry_err(pins, name, |name, path, source| DatapathError::MapUpdate {
        name,
        path,
        source,
    });
    let path = pins.map(name);
    move |source| match (&source, capacity) {
        (MapError::SyscallError(s), Some(capacity))
            if s.io_error.raw_os_error() == Some(libc::E2BIG) =>
        {
            DatapathError::MapFull {
                path: path.clone(),
                capacity,
            }
        }
        _ => update(source),
    }
}

/// The pinned link at `path`.
pub fn open_link(path: &Path) -> Result<FdLink, DatapathError> {
    let pinned = PinnedLink::from_pin(path).map_err(|source| DatapathError::OpenPin {
        path: path.into(),
        source,
    })?;
    Ok(FdLink::from(pinned))
}

/// The id of the program `link` (pinned at `path`) runs.
pub fn link_program(link: &FdLink, path: &Path) -> Result<u32, DatapathError> {
    let info = link.info().map_err(|source| DatapathError::Link {
        path: path.into(),
        source,
    })?;
    Ok(info.program_id())
}

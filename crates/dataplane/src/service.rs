//! The data path's requests on the engine's control socket: `data-path`
//! (mode, interfaces and I/O counters) and shadow evaluation (`shadow`,
//! `shadow-status`, `shadow-clear`; see [`crate::shadow`]).

use std::path::Path;
use std::sync::Arc;

use palisade_engine::control::{DataPathReply, DataPathReport, Extension, Request, Response, ShadowReply};

use crate::shadow::ShadowSlot;
use crate::stats::DataPathInfo;

/// The data path's mode, interfaces and counters, as `palisade status` shows them under `data_path`.
///
/// ```
/// let info = palisade_dataplane::DataPathInfo::new(vec!["pa".into()], false, 1);
/// let r = palisade_dataplane::service::report(&info);
/// assert_eq!(r.mode, "monitor");
/// assert_eq!(r.interfaces[0].interface, "pa");
/// ```
pub fn report(info: &DataPathInfo) -> DataPathReport {
    DataPathReport {
        mode: if info.forwards() { "bridge" } else { "monitor" }.into(),
        workers: info.workers(),
        interfaces: info.totals(),
    }
}

/// The control-socket extension of a data path: answers `data-path` from
/// `info`, and the shadow requests from `shadow` when given.
///
/// ```
/// use std::sync::Arc;
/// use palisade_engine::control::{handle, Request, Response};
/// let info = Arc::new(palisade_dataplane::DataPathInfo::new(vec!["pa".into(), "pb".into()], true, 1));
/// let ext = palisade_dataplane::service::extension(info, None);
/// let dir = std::env::temp_dir().join(format!("palisade-dp-service-doc-{}", std::process::id()));
/// let (engine, _) = palisade_engine::Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
/// let Response::DataPath(reply) = handle(&engine, Request::DataPath, Some(&ext)) else { panic!() };
/// assert_eq!(reply.data_path.mode, "bridge");
/// // Without a shadow slot, shadow requests are not served here.
/// assert!(matches!(handle(&engine, Request::ShadowStatus, Some(&ext)), Response::Error(_)));
/// drop(engine);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn extension(info: Arc<DataPathInfo>, shadow: Option<Arc<ShadowSlot>>) -> Extension {
    Arc::new(move |engine, req| match (req, shadow.as_ref()) {
        (Request::DataPath, _) => Some(Response::DataPath(DataPathReply {
            data_path: report(&info),
        })),
        (Request::Shadow { path }, Some(slot)) => Some(match slot.load(engine, Path::new(path)) {
            Ok(report) => Response::Shadow(Box::new(ShadowReply { shadow: Some(report) })),
            Err(refused) => Response::Error(refused),
        }),
        (Request::ShadowStatus, Some(slot)) => Some(Response::Shadow(Box::new(ShadowReply {
            shadow: slot.report(engine),
        }))),
        (Request::ShadowClear, Some(slot)) => {
            slot.clear();
            Some(Response::Done)
        }
        _ => None,
    })
}
